"""The generation engine on tiny random models: greedy equivalence with one-at-a-time
``model.generate`` (continuous batching, shared prefix, padding), stop rules, seeded sampling,
adapter switching, out-of-memory back-off, and log-likelihood against a direct computation."""

from __future__ import annotations

import random

import pytest
import torch

from models.tiny import build_model, build_tokenizer, save_model_dir
from tunesmith.errors import TunesmithError
from tunesmith.generate import (
    AdapterError,
    Engine,
    GenerationConfig,
    GenerationError,
    corpus_perplexity,
)
from tunesmith.generate.batch import DecodeBatch
from tunesmith.generate.kv import MIN_SHARED_PREFIX, SharedPrefix, common_prefix
from tunesmith.models.chat import encode_prompt, end_of_turn_ids, render_for_training

SYSTEM = "You answer billing, shipping and account questions for the help desk; reply briefly."
WORDS = ["order", "refund", "password", "login", "account", "billing", "shipping", "parcel", "late", "broken", "thanks", "please", "help"]

# (architecture, init seed, end-of-turn logit scale): random models whose greedy answers end
# at varied lengths, so rows retire at different steps and new prompts join mid-flight.
VARIED = [("llama", 0, 1.6), ("qwen2", 1, 1.3), ("gpt2", 0, 1.5)]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def varied_model(tok, arch: str, seed: int, scale: float):
    """A tiny model whose end-of-turn token wins the argmax now and then."""
    model = build_model(arch, tok, seed=seed)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        model.get_output_embeddings().weight[eot] *= scale
    return model


def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """User turns of 1..13 words: prompt lengths differ, so left padding matters."""
    rng = random.Random(seed)
    return [[{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(1 + (i * 7) % 13))}]
            for i in range(n)]


def reference(model, tok, convs, max_new: int, system: str | None = SYSTEM) -> list[list[int]]:
    """One prompt at a time through ``model.generate`` (greedy): what the engine must equal."""
    stop = end_of_turn_ids(tok)
    outs = []
    with torch.inference_mode():
        for conv in convs:
            ids = torch.tensor([encode_prompt(tok, conv, system=system)])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                 do_sample=False, eos_token_id=stop, pad_token_id=tok.pad_token_id)
            outs.append(out[0, ids.shape[1]:].tolist())
    return outs


@pytest.fixture
def merges(monkeypatch):
    """Counts prompts that joined a batch already in flight (continuous batching)."""
    joined = []
    original = DecodeBatch.merge

    def spy(self, other):
        joined.append(len(other))
        return original(self, other)

    monkeypatch.setattr(DecodeBatch, "merge", spy)
    return joined


# --------------------------------------------------------------------------- greedy
def test_on_token_streams_each_answers_tokens_as_they_are_picked(tok, merges):
    """The server's streaming hook: per conversation, the tokens seen one by one are the answer's
    tokens, in order, while prompts join and leave the batch."""
    engine = Engine(varied_model(tok, "llama", 0, 1.6), tok, system=SYSTEM, max_batch_size=3)
    streamed: dict[int, list[int]] = {}

    def on_token(index: int, token_ids: list[int]) -> None:
        seen = streamed.setdefault(index, [])
        assert token_ids[: len(seen)] == seen  # the list only grows, one token per call
        seen.append(token_ids[-1])

    got = engine.generate(conversations(8), GenerationConfig(max_new_tokens=20), on_token=on_token)
    assert merges and len({g.tokens for g in got}) >= 2
    assert [streamed[i] for i in range(8)] == [g.token_ids for g in got]


@pytest.mark.parametrize(("arch", "seed", "scale"), VARIED)
@pytest.mark.parametrize("share_prefix", [True, False])
def test_greedy_equals_one_at_a_time_generate(tok, merges, arch, seed, scale, share_prefix):
    model = varied_model(tok, arch, seed, scale)
    convs = conversations(8)
    want = reference(model, tok, convs, max_new=20)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3, share_prefix=share_prefix)
    got = engine.generate(convs, GenerationConfig(max_new_tokens=20))
    assert [g.token_ids for g in got] == want
    assert len({len(w) for w in want}) >= 2  # the fixture really ends answers at varied steps
    assert merges  # prompts joined batches in flight
    for g, w, conv in zip(got, want, convs, strict=True):
        stopped = w[-1] in engine.stop_ids
        assert g.finish_reason == ("stop" if stopped else "length")
        assert g.tokens == len(w) and g.prompt_tokens == len(encode_prompt(tok, conv, system=SYSTEM))
        assert g.text == tok.decode(w[:-1] if stopped else w, skip_special_tokens=True)
        assert g.seconds > 0


def test_plain_transformers_cache_path_gives_the_same_tokens(tok, merges, monkeypatch):
    """Without our growing layer (transformers' own DynamicLayer) merging still works."""
    monkeypatch.setenv("TUNESMITH_PLAIN_KV_CACHE", "1")
    model = varied_model(tok, "gpt2", 0, 1.5)
    convs = conversations(8)
    got = Engine(model, tok, system=SYSTEM, max_batch_size=3).generate(convs, GenerationConfig(max_new_tokens=20))
    assert [g.token_ids for g in got] == reference(model, tok, convs, max_new=20)
    assert merges


def test_sliding_window_model_falls_back_to_static_batches(tok, merges):
    """Sliding-window caches cannot be merged: batches run to the end, outputs still equal."""
    from transformers import AutoModelForCausalLM, MistralConfig

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        sliding_window=24, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight[tok.convert_tokens_to_ids("<|im_end|>")] *= 1.5
    convs = conversations(8)  # prompts of 40+ tokens: longer than the window
    want = reference(model, tok, convs, max_new=20)
    got = Engine(model, tok, system=SYSTEM, max_batch_size=3).generate(convs, GenerationConfig(max_new_tokens=20))
    assert [g.token_ids for g in got] == want
    assert len({len(w) for w in want}) >= 2 and not merges


def test_growing_layer_appends_in_place_and_selects_rows():
    from tunesmith.generate.kv import GrowingLayer

    layer, parts, buffers = GrowingLayer(), [], set()
    for n in [5, 1, 1, 1, 70, 1]:
        k = torch.randn(3, 2, n, 4)
        parts.append(k)
        keys, values = layer.update(k, -k)
        buffers.add(layer._k.data_ptr())
        assert torch.equal(keys, torch.cat(parts, dim=2)) and torch.equal(values, -keys)
    assert len(buffers) == 2  # one reallocation for 79 tokens, not one per token
    full = layer.keys.clone()
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys, full[[2, 0]]) and layer.get_seq_length() == 79
    keys, _ = layer.update(torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))
    assert torch.equal(keys[:, :, :79], full[[2, 0]]) and keys.shape[2] == 80


def test_prefill_passes_group_similar_lengths():
    from tunesmith.generate.batch import Request, prefill_groups

    reqs = [Request(i, [0] * n, 8) for i, n in enumerate([180, 170, 100, 95, 20])]
    assert [[len(r.prompt) for r in g] for g in prefill_groups(reqs, 0)] == [[180, 170], [100, 95], [20]]
    # past a 90-token shared prefix the tails are 90, 80, 10, 5: the first two still match
    assert [len(g) for g in prefill_groups(reqs[:4], 90)] == [2, 1, 1]
    assert prefill_groups([], 0) == []


def test_shared_prefix_is_the_system_prompt(tok):
    model = build_model("llama", tok)
    prompts = [encode_prompt(tok, c, system=SYSTEM) for c in conversations(4)]
    prefix = SharedPrefix.build(model, prompts)
    assert prefix is not None and prefix.length >= MIN_SHARED_PREFIX
    assert prefix.tokens == common_prefix(prompts)[: prefix.length]
    assert all(p[: prefix.length] == prefix.tokens and len(p) > prefix.length for p in prompts)
    assert SharedPrefix.build(model, prompts[:1]) is None  # one prompt: nothing to share


def test_identical_prompts_still_get_their_own_logits(tok):
    """A prompt that IS the common prefix keeps its last token out of it."""
    model = varied_model(tok, "gpt2", 0, 1.5)
    convs = [conversations(3)[2]] * 3
    want = reference(model, tok, convs, max_new=8)
    got = Engine(model, tok, system=SYSTEM).generate(convs, GenerationConfig(max_new_tokens=8))
    assert [g.token_ids for g in got] == want


# --------------------------------------------------------------------------- stop rules
def test_stop_string_cuts_the_text_and_sets_finish_reason(tok):
    model = build_model("llama", tok, seed=1)  # never emits end-of-turn within 20 tokens
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=4)
    convs = conversations(4)
    free = engine.generate(convs, GenerationConfig(max_new_tokens=20))
    assert all(g.finish_reason == "length" and g.tokens == 20 for g in free)
    text = free[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = engine.generate(convs, GenerationConfig(max_new_tokens=20, stop=[stop]))
    for before, after in zip(free, cut, strict=True):
        if stop in before.text:
            assert after.text == before.text[: before.text.index(stop)]
            assert after.finish_reason == "stop" and after.tokens < 20
            assert after.token_ids == before.token_ids[: after.tokens]  # it stopped decoding
        else:
            assert after.text == before.text and after.finish_reason == "length"


@pytest.mark.parametrize(("arch", "seed", "scale"), VARIED[:2])
def test_complete_continues_raw_text_like_generate(tok, arch, seed, scale):
    """Raw-text completion (no chat template): same tokens as one-at-a-time ``model.generate``,
    ending at end-of-text as well as end-of-turn."""
    model = varied_model(tok, arch, seed, scale)
    eos = tok.eos_token_id
    texts = [" ".join(random.Random(i).choice(WORDS) for _ in range(2 + i)) for i in range(6)]
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=4)
    stops = sorted({*engine.stop_ids, eos})
    got = engine.complete(texts, GenerationConfig(max_new_tokens=15))
    with torch.inference_mode():
        for text, g in zip(texts, got, strict=True):
            ids = torch.tensor([tok(text)["input_ids"]])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=15, do_sample=False,
                                 eos_token_id=stops, pad_token_id=tok.pad_token_id)
            want = out[0, ids.shape[1]:].tolist()
            assert g.token_ids == want and g.prompt_tokens == ids.shape[1]
            assert g.finish_reason == ("stop" if want[-1] in stops else "length")
    with pytest.raises(GenerationError, match="text 1: empty prompt"):
        engine.complete(["fine", ""])


def test_max_new_tokens_ends_with_length(tok):
    engine = Engine(build_model("llama", tok, seed=1), tok, system=SYSTEM)
    out = engine.generate(conversations(3), GenerationConfig(max_new_tokens=5))
    assert [(g.tokens, g.finish_reason) for g in out] == [(5, "length")] * 3
    assert engine.generate([]) == [] and engine.loglikelihood([]) == []


def test_context_limit_caps_the_answer_and_rejects_longer_prompts(tok):
    engine = Engine(build_model("llama", tok, seed=1), tok)  # context 256
    conv = [{"role": "user", "content": "order " * 120}]
    n = len(engine.encode(conv))
    assert n < 256
    (g,) = engine.generate([conv], GenerationConfig(max_new_tokens=300))
    assert g.tokens == 256 - n and g.finish_reason == "length"
    with pytest.raises(GenerationError, match="conversation 1: the prompt has"):
        engine.generate([conv, [{"role": "user", "content": "order " * 300}]])


# --------------------------------------------------------------------------- sampling
def test_sampling_is_reproducible_and_independent_of_batching(tok):
    model = build_model("llama", tok, seed=2)
    convs = conversations(6)
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=5)
    wide = Engine(model, tok, system=SYSTEM, max_batch_size=6).generate(convs, cfg)
    again = Engine(model, tok, system=SYSTEM, max_batch_size=6).generate(convs, cfg)
    narrow = Engine(model, tok, system=SYSTEM, max_batch_size=1).generate(convs, cfg)
    other = Engine(model, tok, system=SYSTEM, max_batch_size=6).generate(
        convs, GenerationConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=6))
    greedy = Engine(model, tok, system=SYSTEM).generate(convs, GenerationConfig(max_new_tokens=12))
    ids = lambda gens: [g.token_ids for g in gens]  # noqa: E731
    assert ids(wide) == ids(again) == ids(narrow)
    assert ids(wide) != ids(other) and ids(wide) != ids(greedy)


def test_top_p_keeps_only_the_nucleus():
    from tunesmith.generate.sampling import _top_p_filter

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert _top_p_filter(probs, 0.7).tolist() == [pytest.approx([0.5, 0.3, 0.0, 0.0])]
    assert _top_p_filter(probs, 0.4).tolist() == [pytest.approx([0.5, 0.0, 0.0, 0.0])]
    assert _top_p_filter(probs, 1.0).tolist() == [pytest.approx([0.5, 0.3, 0.15, 0.05])]


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0},
                                 {"stop": [""]}, {"stop": "###"}])
def test_bad_generation_config_is_rejected(bad):
    with pytest.raises(TunesmithError, match="generation config"):
        GenerationConfig(**bad)


# --------------------------------------------------------------------------- out of memory
def _fail_once_above(model, rows: int, message: str):
    """Make ``model.forward`` raise ``message`` the first time a batch has more than ``rows``."""
    original, calls = model.forward, {"failed": 0}

    def forward(*args, **kw):
        if not calls["failed"] and kw["input_ids"].shape[0] > rows:
            calls["failed"] += 1
            raise RuntimeError(message)
        return original(*args, **kw)

    model.forward = forward
    return calls


def test_out_of_memory_halves_the_batch_and_finishes(tok):
    model = varied_model(tok, "gpt2", 0, 1.5)
    convs = conversations(10)
    want = reference(model, tok, convs, max_new=16)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=8)
    calls = _fail_once_above(model, 4, "CUDA out of memory. Tried to allocate 2.00 GiB")
    got = engine.generate(convs, GenerationConfig(max_new_tokens=16))
    assert calls["failed"] == 1 and engine.oom_backoffs == 1
    assert engine.max_batch_size == 4  # halved from the 8 rows that failed; kept for later calls
    assert [g.token_ids for g in got] == want


def test_out_of_memory_in_scoring_backs_off_too(tok):
    model = build_model("llama", tok)
    engine = Engine(model, tok, max_batch_size=8)
    texts = [" ".join(WORDS[: 3 + i]) for i in range(8)]
    want = engine.loglikelihood(texts)
    _fail_once_above(model, 2, "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
    got = engine.loglikelihood(texts)
    assert [s.tokens for s in got] == [s.tokens for s in want]
    assert [s.nll for s in got] == pytest.approx([s.nll for s in want], rel=1e-5)
    assert engine.oom_backoffs == 1 and engine.max_batch_size == 4


def test_out_of_memory_with_one_row_is_a_clear_error_and_other_errors_pass_through(tok):
    model = build_model("llama", tok)
    engine = Engine(model, tok, max_batch_size=1)
    _fail_once_above(model, 0, "CUDA out of memory.")
    with pytest.raises(GenerationError, match="out of memory with a single sequence"):
        engine.generate(conversations(2), GenerationConfig(max_new_tokens=2))
    _fail_once_above(model, 0, "shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        Engine(model, tok).generate(conversations(2), GenerationConfig(max_new_tokens=2))


# --------------------------------------------------------------------------- scoring
def _direct_nll(model, ids: list[int], spans: list[tuple[int, int]]) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return -sum(float(logp[t - 1, ids[t]]) for a, b in spans for t in range(a, b))


def test_loglikelihood_equals_a_direct_computation(tok):
    model = build_model("llama", tok)
    engine = Engine(model, tok, max_batch_size=3)
    texts = [" ".join(WORDS[: 2 + (i * 5) % 12]) for i in range(7)] + ["x"]
    scores = engine.loglikelihood(texts)
    for text, s in zip(texts, scores, strict=True):
        ids = tok(text)["input_ids"]
        assert s.tokens == len(ids) - 1
        assert s.nll == pytest.approx(_direct_nll(model, ids, [(1, len(ids))]), rel=1e-4, abs=1e-4)
    assert engine.perplexity(texts) == pytest.approx(corpus_perplexity(scores))
    total = sum(s.nll for s in scores) / sum(s.tokens for s in scores)
    assert engine.perplexity(texts) == pytest.approx(torch.tensor(total).exp().item())


@pytest.mark.parametrize(("head_at_scored_positions", "share_prefix"), [(True, True), (False, True), (True, False)])
def test_score_conversations_counts_only_the_answers(tok, monkeypatch, head_at_scored_positions, share_prefix):
    import tunesmith.generate.scoring as scoring

    monkeypatch.setattr(scoring, "accepts_logits_to_keep", lambda model: head_at_scored_positions)
    prefixes = []
    real = scoring.scoring_prefix
    monkeypatch.setattr("tunesmith.generate.engine.scoring_prefix", lambda m, r: prefixes.append(real(m, r)) or prefixes[-1])
    model = build_model("qwen2", tok)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3, share_prefix=share_prefix)
    # answers of different lengths in one batch: each row scores its own positions only
    convs = [[*c, {"role": "assistant", "content": " ".join(["billing"] * (1 + i % 3))}]
             for i, c in enumerate(conversations(4))]
    for conv, s in zip(convs, engine.score_conversations(convs), strict=True):
        rendered = render_for_training(tok, conv, system=SYSTEM)
        spans = rendered.token_spans()
        assert s.tokens == sum(b - a for a, b in spans) > 0
        assert s.nll == pytest.approx(_direct_nll(model, rendered.input_ids, spans), rel=1e-4)
    if share_prefix:  # the system prompt ran once, every sequence's rest on top of it
        (prefix,) = prefixes
        system_ids = render_for_training(tok, [{"role": "user", "content": "x"}], system=SYSTEM).input_ids
        assert prefix is not None and prefix.tokens == system_ids[: prefix.length] and prefix.length >= MIN_SHARED_PREFIX
    else:
        assert not prefixes


# --------------------------------------------------------------------------- adapters
@pytest.mark.slow
def test_adapters_switch_without_reloading_the_base(tmp_path, monkeypatch):
    import tunesmith.models.loading as loading
    from train.test_trainer import make_project
    from tunesmith.config import load_config
    from tunesmith.train.recipe import train

    cfg = load_config(make_project(tmp_path, "{max_steps: 12, lr: 0.02}"))
    version = train(cfg).path
    loads = []
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    plain = Engine.load(str(tmp_path / "tiny"), device="cpu")
    engine = Engine.load(str(tmp_path / "tiny"), device="cpu",
                         adapters={"ft": version, "ft-again": version / "adapter"})
    assert len(loads) == 2  # one per engine: adding adapters loads no base weights
    convs = [[{"role": "user", "content": f"ticket {i} about my billing problem, please help"}]
             for i in range(4)]
    cfg = GenerationConfig(max_new_tokens=6)
    base_model = engine.model.get_base_model()
    base = engine.generate(convs, cfg)
    tuned = engine.generate(convs, cfg, adapter="ft")
    again = engine.generate(convs, cfg, adapter="ft-again")
    back = engine.generate(convs, cfg)
    ids = lambda gens: [g.token_ids for g in gens]  # noqa: E731
    assert ids(base) == ids(plain.generate(convs, cfg)) == ids(back)
    assert ids(tuned) == ids(again) != ids(base)
    assert engine.model.get_base_model() is base_model
    with pytest.raises(AdapterError, match="unknown adapter 'nope'; loaded adapters: ft, ft-again"):
        engine.generate(convs, cfg, adapter="nope")
    # a scorer called back from generation (on_finish) under the same adapter leaves the model
    # as the generation needs it: PEFT's disable_adapter does not nest, the engine must not nest it
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = plain.model(input_ids=probe).logits
    seen = []

    def on_finish(index, gen):
        engine.perplexity(["ticket 1 about billing"])  # the base model, inside the base block
        seen.append(bool(torch.allclose(engine.model(input_ids=probe).logits, want, atol=1e-5)))

    assert ids(engine.generate(convs, cfg, on_finish=on_finish)) == ids(base)
    assert len(seen) == len(convs) and all(seen)


def test_a_full_fine_tune_is_served_beside_the_base(tmp_path):
    from train.test_trainer import make_project
    from tunesmith.config import load_config
    from tunesmith.models.loading import load_model
    from tunesmith.train.recipe import train

    cfg = load_config(make_project(tmp_path, "{method: full, max_steps: 6, lr: 0.01}"))
    version = train(cfg).path
    engine = Engine.load(str(tmp_path / "tiny"), device="cpu", adapters={"ft": version})
    plain = Engine.load(str(tmp_path / "tiny"), device="cpu")
    alone = Engine(load_model(str(version / "model")), plain.tokenizer)
    convs = [[{"role": "user", "content": f"ticket {i} about my billing problem, please help"}]
             for i in range(3)]
    cfg = GenerationConfig(max_new_tokens=6)
    ids = lambda gens: [g.token_ids for g in gens]  # noqa: E731
    base = engine.generate(convs, cfg)
    tuned = engine.generate(convs, cfg, adapter="ft")
    assert ids(tuned) == ids(alone.generate(convs, cfg)) != ids(base)
    assert ids(engine.generate(convs, cfg)) == ids(base) == ids(plain.generate(convs, cfg))
    assert engine.perplexity(["ticket 1 about billing"], adapter="ft") == pytest.approx(
        alone.perplexity(["ticket 1 about billing"]))


def test_adapter_paths_are_checked(tmp_path, tok):
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    model_dir = save_model_dir(tmp_path / "base", "llama")
    engine = Engine.load(str(model_dir), device="cpu")
    with pytest.raises(AdapterError, match="does not exist"):
        engine.add_adapter("x", tmp_path / "gone")
    with pytest.raises(AdapterError, match=r"no adapter_config\.json"):
        engine.add_adapter("x", model_dir)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "model_version.json").write_text('{"weights": "model"}')
    with pytest.raises(AdapterError, match=r"weights folder .*full/model is missing"):
        engine.add_adapter("x", tmp_path / "full")
    # an adapter whose model version was trained on another base is refused
    version = tmp_path / "other"
    get_peft_model(build_model("llama", tok, seed=3), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        version / "adapter")
    (version / "model_version.json").write_text('{"base_model": "elsewhere", "base_fingerprint": "0" }')
    with pytest.raises(AdapterError, match="trained on 'elsewhere'"):
        engine.add_adapter("x", version)
    # prompt tuning is refused before anything is loaded
    prompt = get_peft_model(build_model("llama", tok), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    prompt.save_pretrained(tmp_path / "prompt")
    with pytest.raises(AdapterError, match="prompt-learning"):
        engine.add_adapter("x", tmp_path / "prompt")
    # a LoRA made for a model of another width does not fit
    wide = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2))
    get_peft_model(wide, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "wide")
    with pytest.raises(AdapterError, match="does not fit this base model"):
        engine.add_adapter("x", tmp_path / "wide")
    assert engine.adapters == {}


def test_unrenderable_conversation_names_its_index(tok):
    engine = Engine(build_model("llama", tok), tok)
    with pytest.raises(GenerationError, match="conversation 1"):
        engine.generate([conversations(1)[0], [{"role": "assistant", "content": "hi"}]])


# --------------------------------------------------------------------------- library warnings
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generation_and_scoring_pass_the_cache_the_installed_transformers_wants(tok, arch, caplog):
    """No deprecation warning from transformers: the cache goes in under the name its forward
    takes (``cache`` since 5.24, ``past_key_values`` before)."""
    import logging
    import warnings

    logging.Logger.warning_once.cache_clear()  # transformers logs some warnings once per process
    hf = logging.getLogger("transformers")
    hf.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine = Engine(build_model(arch, tok), tok, system=SYSTEM)
            engine.generate(conversations(4), GenerationConfig(max_new_tokens=6))
            engine.score_conversations([[*c, {"role": "assistant", "content": "refund"}] for c in conversations(3)])
    finally:
        hf.removeHandler(caplog.handler)
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "deprecated" in m], said


@pytest.mark.parametrize(("arch", "seed", "scale"), VARIED)
def test_one_prompt_at_a_time_reuses_the_system_prompt_and_changes_no_token(tok, arch, seed, scale):
    """A server answers one request per call: from the second call on, the system prompt's
    keys/values come from the engine's prefix memo (not recomputed), and every answer equals
    transformers' own greedy generate; a new system prompt narrows the memo, still exact."""
    model = varied_model(tok, arch, seed, scale)
    convs = conversations(5)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3)
    got = [engine.generate([c], GenerationConfig(max_new_tokens=12))[0].token_ids for c in convs]
    assert got == reference(model, tok, convs, max_new=12)
    [(_, prefix)] = engine.prefix_memo._seen.values()
    assert prefix is not None and prefix.length >= MIN_SHARED_PREFIX
    other = [[{"role": "system", "content": "Another deployment's instructions, short."}, *c[-1:]] for c in convs[:2]]
    again = [engine.generate([c], GenerationConfig(max_new_tokens=12))[0].token_ids for c in other]
    assert again == reference(model, tok, other, max_new=12, system=None)
