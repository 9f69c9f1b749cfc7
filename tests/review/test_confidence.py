"""Answer confidence from the model's token log-probabilities equals a brute-force
normalisation computed directly from the model (one full forward pass per allowed value, no
batching, no shared prefix), on a tiny random Llama in float32."""

from __future__ import annotations

import json
import math

import pytest
import torch

from models.tiny import build_model, build_tokenizer
from tunesmith.config import OutputSpec
from tunesmith.generate import Engine, GenerationConfig
from tunesmith.review.confidence import ScoringCost, score_answers, value_spans

CATS = ["billing", "bug", "security", "account_access"]
URG = ["low", "high", "critical"]
SPEC = OutputSpec(kind="json", label_fields=["category", "urgency"], json_schema={
    "type": "object", "properties": {"category": {"enum": CATS}, "urgency": {"enum": URG}}})
LABEL_SPEC = OutputSpec(kind="label", labels=CATS)
SYSTEM = "You triage support tickets for the billing team. Answer with JSON only, please."


@pytest.fixture(scope="module")
def engine():
    tok = build_tokenizer()
    return Engine(build_model("llama", tok, seed=7), tok, max_batch_size=4)


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def full_logprobs(engine, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


def brute(engine, prompt: list[int], texts: list[str]) -> list[float]:
    """Normalised probability of each continuation text of ``prompt``, from the first token
    where their tokenisations differ (each scored alone, full forward pass)."""
    seqs = [prompt + engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    start = 0
    while all(len(s) > start + 1 for s in seqs) and len({s[start] for s in seqs}) == 1:
        start += 1
    lls = []
    for s in seqs:
        lp = full_logprobs(engine, s)
        lls.append(sum(float(lp[t - 1, s[t]]) for t in range(start, len(s))))
    m = max(lls)
    z = sum(math.exp(x - m) for x in lls)
    return [math.exp(x - m) / z for x in lls]


def brute_json(engine, prompt: list[int], answer: str, name: str, allowed: list[str]) -> dict[str, float]:
    key = f'"{name}": "'
    head = answer[: answer.index(key) + len(key) - 1]  # up to the value's opening quote
    return dict(zip(allowed, brute(engine, prompt, [head + json.dumps(v) for v in allowed]), strict=True))


def test_json_field_confidence_equals_brute_force(engine):
    answers = ['{"category": "billing", "urgency": "high"}',
               '{"category":"security","urgency":"critical"}',
               'Sure: {"urgency": "low", "category": "bug"} hope this helps',
               '{"category": "account_access", "urgency": "high", "note": "x"}']
    prompts = [engine.encode(conv(f"ticket {i}: my invoice {i * 13} is wrong")) for i in range(len(answers))]
    cost = ScoringCost()
    scores = score_answers(engine, SPEC, prompts, answers, cost=cost)
    for prompt, answer, s in zip(prompts, answers, scores, strict=True):
        obj = json.loads(answer[answer.index("{"): answer.rindex("}") + 1])
        per, overall = s.confidences()
        for name, allowed in (("category", CATS), ("urgency", URG)):
            want = brute_json(engine, prompt, answer.replace('":"', '": "').replace('","', '", "'), name, allowed) \
                if '":"' not in answer else None
            got = s.logliks[name]
            probs = {v: math.exp(got[v] - max(got.values())) for v in allowed}
            z = sum(probs.values())
            if want is not None:
                for v in allowed:
                    assert probs[v] / z == pytest.approx(want[v], abs=1e-5), (answer, name, v)
            assert per[name] == pytest.approx(probs[obj[name]] / z, abs=1e-9)
        assert overall == min(per.values())
    assert cost.answers == 4 and cost.rows == 4 * (len(CATS) + len(URG))


def test_compact_json_confidence_equals_brute_force(engine):
    answer = '{"category":"security","urgency":"critical"}'
    prompt = engine.encode(conv("someone logged into my account from abroad"))
    [s] = score_answers(engine, SPEC, [prompt], [answer])
    head = '{"category":'
    want = brute(engine, prompt, [head + json.dumps(v) for v in CATS])
    per, _ = s.confidences()
    assert per["category"] == pytest.approx(want[CATS.index("security")], abs=1e-5)
    head = '{"category":"security","urgency":'
    want = brute(engine, prompt, [head + json.dumps(v) for v in URG])
    assert per["urgency"] == pytest.approx(want[URG.index("critical")], abs=1e-5)


def test_temperature_scales_and_keeps_the_argmax(engine):
    prompt = engine.encode(conv("refund my order please"))
    [s] = score_answers(engine, SPEC, [prompt], ['{"category": "billing", "urgency": "low"}'])
    lls = s.logliks["category"]
    raw, _ = s.confidences()
    hot, _ = s.confidences({"category": 3.0})
    z3 = sum(math.exp(v / 3.0) for v in lls.values())
    assert hot["category"] == pytest.approx(math.exp(lls["billing"] / 3.0) / z3, abs=1e-12)
    assert hot["urgency"] == raw["urgency"]  # no temperature for it: uncalibrated


def test_label_answer_confidence_equals_brute_force(engine):
    eot = engine.tokenizer.decode(engine.stop_ids[:1])
    prompts = [engine.encode(conv(t)) for t in ("my card was charged twice", "app crashes on start")]
    scores = score_answers(engine, LABEL_SPEC, prompts, ["billing", "bug"])
    for prompt, s, label in zip(prompts, scores, ["billing", "bug"], strict=True):
        want = brute(engine, prompt, [v + eot for v in CATS])
        per, overall = s.confidences()
        assert per == {"label": pytest.approx(want[CATS.index(label)], abs=1e-5)} and overall == per["label"]


def test_missing_or_unknown_values_have_confidence_zero(engine):
    prompt = engine.encode(conv("hello"))
    missing, unknown, broken = score_answers(
        engine, SPEC, [prompt] * 3,
        ['{"category": "billing"}', '{"category": "refunds", "urgency": "low"}', "no json here"])
    assert missing.confidences()[0]["urgency"] == 0.0 and missing.confidences()[1] == 0.0
    assert unknown.confidences()[0]["category"] == 0.0 and unknown.confidences()[0]["urgency"] > 0
    assert broken.values is None and broken.confidences() == ({}, None)


def test_free_text_confidence_from_decoding_logprobs_equals_scoring(engine):
    spec = OutputSpec(kind="text")
    convs = [conv("say something"), conv("say something else")]
    gens = engine.generate(convs, GenerationConfig(max_new_tokens=6, logprobs=0))
    prompts = [engine.encode(c) for c in convs]
    decoded = score_answers(engine, spec, prompts, [g.text for g in gens], logprobs=[g.logprobs for g in gens])
    for g, d, p in zip(gens, decoded, prompts, strict=True):
        stops = set(engine.stop_ids)
        ids = [t for t in g.token_ids if t not in stops]
        lp = full_logprobs(engine, p + ids)
        want = math.exp(sum(float(lp[len(p) + k - 1, t]) for k, t in enumerate(ids)) / len(ids))
        assert d.confidences()[1] == pytest.approx(want, abs=1e-5)


def test_value_spans_follow_nesting():
    text = 'x {"a": {"b": "v", "c": [1, 2]}, "d": true}'
    spans = value_spans(text)
    assert text[slice(*spans["a.b"])] == '"v"' and text[slice(*spans["d"])] == "true"
    assert value_spans("{broken") is None


def test_the_engine_scorer_fallback_gives_the_same_numbers(engine, monkeypatch):
    """Models whose cache cannot be shared go through Engine.score: same log-likelihoods."""
    answers = ['{"category": "bug", "urgency": "critical"}', '{"urgency":"low","category":"billing"}']
    prompts = [engine.encode(conv(f"crash number {i} after the update")) for i in range(2)]
    incremental = score_answers(engine, SPEC, prompts, answers)
    monkeypatch.setenv("TUNESMITH_PLAIN_KV_CACHE", "1")
    fallback = score_answers(engine, SPEC, prompts, answers)
    for a, b in zip(incremental, fallback, strict=True):
        for name in ("category", "urgency"):
            for v in a.logliks[name]:
                assert a.logliks[name][v] == pytest.approx(b.logliks[name][v], abs=1e-4)


def _json_merging_tokenizer():
    """A byte-level BPE trained on compact JSON, so that, as in SmolLM2's vocabulary, a closing
    quote merges with what follows it (``","`` and ``"}`` are single tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from models.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS

    corpus = [json.dumps({"category": c, "urgency": u}, separators=(",", ":")) for c in CATS for u in URG]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus * 50 + [SYSTEM, "ticket my invoice is wrong"], trainer=trainers.BpeTrainer(
        vocab_size=360, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML_TEMPLATE
    return tok


def test_values_are_scored_in_the_tokens_the_model_wrote():
    """With a vocabulary that merges a closing quote into ``","``/``"}``, the chosen value's
    scored continuation is exactly the answer's own tokens: scoring ``"security"`` with a bare
    closing quote would end on a token the model never writes (on SmolLM2 that drowned every
    value's difference in a shared -17 nats and made the confidences noise)."""
    from tunesmith.review.confidence import alternatives

    tok = _json_merging_tokenizer()
    merged = tok.convert_ids_to_tokens(tok('{"category":"bug","urgency":"low"}')["input_ids"])
    assert '","' in merged and '"}' in merged, merged  # the vocabulary has the merges under test
    eng = Engine(build_model("llama", tok, seed=3), tok, max_batch_size=4)
    answer = '{"category":"security","urgency":"critical"}'
    prompt = eng.encode(conv("someone logged into my account from abroad"))
    own = prompt + tok(answer, add_special_tokens=False)["input_ids"]
    alts = {a.field: a for a in alternatives(eng, SPEC, prompt, answer)}
    for name, value in (("category", "security"), ("urgency", "critical")):
        ids = alts[name].ids[alts[name].values.index(value)]
        assert own[: len(ids)] == ids, name
    [s] = score_answers(eng, SPEC, [prompt], [answer])
    per, _ = s.confidences()
    want = brute(eng, prompt, ['{"category":' + json.dumps(v) + ',"' for v in CATS])
    assert per["category"] == pytest.approx(want[CATS.index("security")], abs=1e-5)
    want = brute(eng, prompt, ['{"category":"security","urgency":' + json.dumps(v) + "}" for v in URG])
    assert per["urgency"] == pytest.approx(want[URG.index("critical")], abs=1e-5)


def test_the_shared_system_prompt_runs_once_and_changes_no_number():
    """Consecutive scorings whose contexts share the system prompt reuse its keys/values (the
    server scores one request at a time); the log-likelihoods equal a full forward pass."""
    tok = build_tokenizer()
    eng = Engine(build_model("llama", tok, seed=11), tok, max_batch_size=4)
    answers = ['{"category": "bug", "urgency": "low"}', '{"category":"billing","urgency":"critical"}',
               '{"category": "security", "urgency": "high"}']
    system_ids = tok(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n", add_special_tokens=False)["input_ids"]
    for i, answer in enumerate(answers):
        prompt = eng.encode(conv(f"ticket {i}: the app crashes when I open invoice {i * 7}"))
        [s] = score_answers(eng, SPEC, [prompt], [answer])
        [(_, prefix)] = eng.prefix_memo._seen.values()
        if i == 0:
            assert prefix is None  # nothing to share with yet
        else:
            assert prefix is not None and prefix.length >= len(system_ids) - 2  # the system turn, kept
        key = '"category": "' if '": "' in answer else '"category":"'
        head = answer[: answer.index(key) + len(key) - 1]
        after = ", " if '": "' in answer else ","
        want = brute(eng, prompt, [head + json.dumps(v) + after + '"' for v in CATS])
        got = s.logliks["category"]
        z = sum(math.exp(v) for v in got.values())
        for v in CATS:
            assert math.exp(got[v]) / z == pytest.approx(want[CATS.index(v)], abs=1e-5), (i, v)


@pytest.mark.parametrize("attention", ["sdpa", "eager", "rows"])
def test_packed_and_batched_alternatives_give_the_brute_force_numbers(attention, monkeypatch):
    """The alternatives are packed into one row with a 4D mask (sdpa: a boolean mask; eager: an
    additive one); an implementation that takes no custom mask (flash) batches them, one copy of
    the cache per row. All three equal one full forward pass per value, for every value of every
    field, on a JSON answer and a label answer."""
    import tunesmith.review.confidence as confidence

    tok = build_tokenizer()
    eng = Engine(build_model("llama", tok, seed=5), tok, max_batch_size=4)
    if attention == "rows":
        monkeypatch.setattr(confidence, "_PACKABLE", ())
    else:
        eng.model.config._attn_implementation = attention
    assert eng.model.config._attn_implementation in ("sdpa", "eager")
    calls = []
    monkeypatch.setattr(confidence, "_score_packed", _spy(confidence._score_packed, calls, "packed"))
    monkeypatch.setattr(confidence, "_score_rows", _spy(confidence._score_rows, calls, "rows"))
    monkeypatch.setattr(confidence, "PACKED_TOKENS", 8)  # several packed passes, the cache cut back between
    answer = '{"category": "account_access", "urgency": "high"}'
    prompt = eng.encode(conv("I cannot log in since the password reset"))
    [s] = score_answers(eng, SPEC, [prompt], [answer])
    for name, allowed, after in (("category", CATS, ', "'), ("urgency", URG, "}")):
        head = answer[: answer.index(f'"{name}": "') + len(name) + 4]
        want = dict(zip(allowed, brute(eng, prompt, [head + json.dumps(v) + after for v in allowed]), strict=True))
        got = s.logliks[name]
        z = sum(math.exp(v) for v in got.values())
        for v in allowed:
            assert math.exp(got[v]) / z == pytest.approx(want[v], abs=1e-5), (attention, name, v)
    [lab] = score_answers(eng, LABEL_SPEC, [prompt], ["account_access"])
    z = sum(math.exp(v) for v in lab.logliks["label"].values())
    eot = tok.convert_ids_to_tokens(eng.stop_ids[:1])[0]
    want = brute(eng, prompt, [v + eot for v in CATS])
    for i, v in enumerate(CATS):
        assert math.exp(lab.logliks["label"][v]) / z == pytest.approx(want[i], abs=1e-5), (attention, v)
    assert set(calls) == {"rows" if attention == "rows" else "packed"}


def _spy(fn, calls, name):
    def wrapped(*args, **kwargs):
        calls.append(name)
        return fn(*args, **kwargs)
    return wrapped


def test_scores_from_generations_own_keys_values_equal_a_fresh_scoring_pass(engine):
    """generate_scored: the scorer starts from the rows generation kept (no prefill: every
    answer's row is taken), and the numbers equal a scoring pass that recomputes the prompt;
    the answers are those of a plain call."""
    from tunesmith.evaluate.outputs import grammar_for
    from tunesmith.review.confidence import generate_scored

    spec = OutputSpec(kind="json", label_fields=["category", "urgency"], json_schema={
        **SPEC.json_schema, "required": ["category", "urgency"], "additionalProperties": False})
    convs = [conv(f"ticket {i}: my invoice {i * 13} is wrong, order {i * 7}") for i in range(7)]
    gcfg = GenerationConfig(max_new_tokens=160, temperature=0.5, seed=3, grammar=grammar_for(spec))
    hits = engine.finished.hits
    prompts, gens, kept = generate_scored(engine, spec, convs, gcfg, adapter=None)
    scored = [s for s in kept if s.values is not None and any(s.logliks.values())]
    assert len(scored) >= 5, [g.text for g in gens]  # the grammar makes JSON of the random model
    assert engine.finished.hits - hits == len(scored)  # every scored answer started from its own row
    assert engine.finished.capacity == 0 and not engine.finished._rows  # nothing kept afterwards
    fresh = score_answers(engine, spec, prompts, [g.text for g in gens])
    for a, b in zip(kept, fresh, strict=True):
        assert a.values == b.values
        for name in ("category", "urgency"):
            assert a.logliks.get(name, {}).keys() == b.logliks.get(name, {}).keys()
            for v, ll in a.logliks.get(name, {}).items():
                assert ll == pytest.approx(b.logliks[name][v], abs=1e-4)
    whole = engine.generate(convs, gcfg)
    assert [g.text for g in whole] == [g.text for g in gens]


def test_a_kept_row_is_only_taken_by_its_own_answer(engine):
    """A row that shares only the system prompt with the scorer's context is left for its own
    answer (it would be the right keys/values for the shared tokens, but the owner would lose
    it); rows are kept per model and adapter, and the oldest are dropped past capacity."""
    from tunesmith.generate.kv import FinishedRows

    rows = FinishedRows(capacity=2)
    rows.put(("m", None), [1, 2, 3, 4], "a")
    rows.put(("m", "ft"), [1, 2, 3, 4, 5], "b")
    assert rows.take(("m", None), [1, 2, 9, 9], at_least=3) is None
    assert rows.take(("m", None), [1, 2, 3, 4, 8], at_least=3) == ([1, 2, 3, 4], "a")
    assert rows.take(("m", None), [1, 2, 3, 4, 8], at_least=3) is None  # taken once
    rows.put(("m", "ft"), [7, 7, 7], "c")
    rows.put(("m", "ft"), [8, 8, 8], "d")  # capacity 2: "b" is dropped
    assert rows.take(("m", "ft"), [1, 2, 3, 4, 5], at_least=3) is None
    assert rows.take(("m", "ft"), [8, 8, 8, 1], at_least=3) == ([8, 8, 8], "d")
    off = FinishedRows()
    off.put(("m", None), [1, 2, 3], "x")  # capacity 0: nothing kept
    assert off.take(("m", None), [1, 2, 3], at_least=1) is None


def test_an_answer_whose_scoring_ran_out_of_memory_is_scored_afterwards(monkeypatch):
    """Scoring inside generation can run out of memory: the engine backs off and goes on (the
    answer has ended and is not re-run), and generate_scored scores it afterwards, with a prefill."""
    import tunesmith.review.confidence as conf
    from tunesmith.evaluate.outputs import grammar_for

    tok = build_tokenizer()
    fresh_engine = Engine(build_model("llama", tok, seed=7), tok, max_batch_size=4)
    spec = OutputSpec(kind="json", label_fields=["category", "urgency"], json_schema={
        **SPEC.json_schema, "required": ["category", "urgency"], "additionalProperties": False})
    convs = [conv(f"ticket {i}: my invoice {i * 13} is wrong, order {i * 7}") for i in range(6)]
    gcfg = GenerationConfig(max_new_tokens=160, temperature=0.5, seed=3, grammar=grammar_for(spec))
    real, calls = conf.score_answers, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(conf, "score_answers", flaky)
    prompts, gens, scores = conf.generate_scored(fresh_engine, spec, convs, gcfg, adapter=None)
    assert fresh_engine.oom_backoffs == 1 and all(s is not None for s in scores)
    want = real(fresh_engine, spec, prompts, [g.text for g in gens])
    for got, exp in zip(scores, want, strict=True):
        assert got.values == exp.values
        for name, lls in exp.logliks.items():
            assert got.logliks[name] == pytest.approx(lls, abs=1e-4)


def test_alternatives_are_packed_as_a_trie_without_their_last_tokens():
    """The packed row holds each distinct prefix of a field's alternatives once, and never an
    alternative's last token (only predicted): ``escalate_security`` / ``escalate_engineering``
    share their context token and ``esc al ate _``. Each alternative's scored tokens are
    predicted by the nodes of its own path."""
    from tunesmith.review.confidence import _Trie

    ctx = 9  # the field's last context token, then the value's tokens and the delimiter
    alternatives = [[ctx, 1, 2, 3, 4, 50], [ctx, 1, 2, 3, 5, 50], [ctx, 6, 50]]
    trie = _Trie(k=100, first=1)
    for row, tokens in enumerate(alternatives):
        trie.add(row, tokens)
    assert [token for token, _, _ in trie.nodes] == [ctx, 1, 2, 3, 4, 5, 6]  # was 6 + 6 + 3 = 15 positions
    assert [depth for _, _, depth in trie.nodes] == [0, 1, 2, 3, 4, 4, 1]
    parents = [parent for _, parent, _ in trie.nodes]
    assert parents == [-1, 0, 1, 2, 3, 3, 0]
    paths = {row: (path, targets) for row, path, targets in trie.scored()}
    assert paths[0] == ([0, 1, 2, 3, 4], [1, 2, 3, 4, 50])
    assert paths[1] == ([0, 1, 2, 3, 5], [1, 2, 3, 5, 50])
    assert paths[2] == ([0, 6], [6, 50])
