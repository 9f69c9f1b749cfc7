import random

import pytest
import torch
import torch.nn.functional as F

from models.tiny import ARCHITECTURES, build_model, build_tokenizer
from tunesmith.data.example import Example
from tunesmith.train.masks import IGNORE_INDEX, TokenizedExample, tokenize_examples
from tunesmith.train.packing import (
    LengthGroupedBatchSampler,
    block_causal_mask,
    collate_packed,
    collate_padded,
    mask_format_for,
    pack_examples,
    padding_efficiency,
    segment_bounds,
    shared_prefixes,
    use_packed_attention,
)

SENTENCES = [
    "Hello! How can I help you today?",
    "Please reset my password, I cannot log in to my account.",
    "Thanks",
    "Your refund was approved and will arrive in three to five days.",
    "My order has not arrived yet.",
    "Goodbye!",
    "The quick brown fox jumps over the lazy dog.",
]


def _chat_examples(tok, n: int = 9) -> list[TokenizedExample]:
    rng = random.Random(0)
    examples = []
    for i in range(n):
        turns = [{"role": "user", "content": rng.choice(SENTENCES)}]
        turns.append(
            {"role": "assistant", "content": " ".join(rng.sample(SENTENCES, rng.randint(1, 3)))}
        )
        examples.append(Example(f"e{i}", turns))
    return tokenize_examples(tok, examples)


def _fake(eid: str, n: int) -> TokenizedExample:
    ids = list(range(1, n + 1))
    return TokenizedExample(eid, ids, list(ids), [(0, n)])


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


# --------------------------------------------------------------------------- packing
def test_every_example_whole_in_exactly_one_row(tok):
    examples = _chat_examples(tok)
    packed = pack_examples(examples, max_length=96)
    by_id = {ex.id: ex for ex in examples}
    seen = [eid for row in packed.rows for eid in row.example_ids]
    assert sorted(seen) == sorted(by_id)
    for row in packed.rows:
        assert len(row) <= 96
        off = 0
        for k, eid in enumerate(row.example_ids):
            ex = by_id[eid]
            n = len(ex)
            assert row.input_ids[off : off + n] == ex.input_ids
            assert row.position_ids[off : off + n] == list(range(n))
            assert row.seq_ids[off : off + n] == [k] * n
            assert row.labels[off] == IGNORE_INDEX
            assert row.labels[off + 1 : off + n] == ex.labels[1:]
            off += n


def test_best_fit_decreasing_fills_rows_tightly():
    lengths = [6, 5, 4, 3, 2]  # 20 tokens: two rows of 10 exactly
    packed = pack_examples([_fake(f"x{n}", n) for n in lengths], max_length=10)
    assert sorted(sorted(r.example_ids) for r in packed.rows) == [["x2", "x3", "x5"], ["x4", "x6"]]
    assert packed.efficiency == 1.0


def test_overlong_examples_truncated_or_dropped_never_split():
    examples = [_fake("long", 25), _fake("short", 4)]
    cut = pack_examples(examples, max_length=10)
    assert cut.truncated == ["long"] and cut.dropped == []
    assert [len(r) for r in cut.rows] == [10, 4]
    dropped = pack_examples(examples, max_length=10, overlong="drop")
    assert dropped.dropped == ["long"] and [r.example_ids for r in dropped.rows] == [["short"]]


# --------------------------------------------------------------------------- masks
def test_block_causal_mask_values():
    seq = torch.tensor([[0, 0, 1, 1, 1, -1]])
    mask = block_causal_mask(seq)[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself: no fully masked row, no NaN
    ]
    additive = block_causal_mask(seq, dtype=torch.bfloat16)
    assert additive.dtype == torch.bfloat16
    assert torch.equal(additive == 0, block_causal_mask(seq))
    assert additive.min() == torch.finfo(torch.bfloat16).min


def _alone(model, ex: TokenizedExample) -> torch.Tensor:
    return model(input_ids=torch.tensor([ex.input_ids])).logits[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_packed_logits_equal_each_example_alone(tok, arch: str, attn: str):
    examples = _chat_examples(tok)
    by_id = {ex.id: ex for ex in examples}
    packed = pack_examples(examples, max_length=128)
    assert len(packed.rows) > 1 and max(len(r.example_ids) for r in packed.rows) > 1
    model = build_model(arch, tok, attn=attn)
    fmt, dtype = mask_format_for(model)
    assert fmt == {"sdpa": "bool", "eager": "float"}[attn]
    batch = collate_packed(packed.rows, pad_id=tok.pad_token_id, mask_format=fmt, mask_dtype=dtype)
    batch.pop("labels")
    worst = 0.0
    with torch.no_grad():
        logits = model(**batch).logits
        for b, row in enumerate(packed.rows):
            off = 0
            for eid in row.example_ids:
                alone = _alone(model, by_id[eid])
                worst = max(worst, (logits[b, off : off + len(alone)] - alone).abs().max().item())
                off += len(alone)
    assert worst < 1e-5


def test_packed_loss_never_predicts_across_examples(tok):
    """The summed token loss of a packed batch equals the sum over examples run alone, and
    no position predicts the first token of the next example."""
    examples = tokenize_examples(
        tok, [Example(f"t{i}", text=s) for i, s in enumerate(SENTENCES)]
    )  # raw text: every token labelled, so a leak at a boundary would be counted
    packed = pack_examples(examples, max_length=64)
    model = build_model("llama", tok)
    batch = collate_packed(packed.rows, pad_id=tok.pad_token_id)
    for row_labels, row in zip(batch["labels"], packed.rows, strict=True):
        starts = [i for i, p in enumerate(row.position_ids) if p == 0]
        assert all(row_labels[s] == IGNORE_INDEX for s in starts)
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        ).logits
        packed_loss = F.cross_entropy(
            logits[:, :-1].flatten(0, 1),
            batch["labels"][:, 1:].flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        alone_loss = sum(
            F.cross_entropy(_alone(model, ex)[:-1], torch.tensor(ex.labels[1:]), reduction="sum")
            for ex in examples
        )
    n_targets = (batch["labels"][:, 1:] != IGNORE_INDEX).sum().item()
    assert n_targets == sum(len(ex) - 1 for ex in examples)
    assert torch.allclose(packed_loss, alone_loss, rtol=1e-5)


def test_collate_pads_with_ignored_labels(tok):
    rows = pack_examples([_fake("a", 5), _fake("b", 3)], max_length=5).rows
    batch = collate_packed(rows, pad_id=0, pad_to_multiple_of=8)
    assert batch["input_ids"].shape == (2, 8) and batch["attention_mask"].shape == (2, 1, 8, 8)
    assert batch["labels"][1, 3:].eq(IGNORE_INDEX).all()
    assert batch["position_ids"][1].tolist() == list(range(8))  # padding keeps counting
    assert "attention_mask" not in collate_packed(rows, pad_id=0, mask_format="none")
    padded = collate_padded([_fake("a", 5), _fake("b", 3)], pad_id=0, max_length=4)
    assert padded["input_ids"].shape == (2, 4)
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert padded["labels"][1].tolist() == [1, 2, 3, IGNORE_INDEX]


# --------------------------------------------------------------------------- batching
def test_length_grouped_sampler_is_deterministic_complete_and_tight():
    rng = random.Random(1)
    lengths = [rng.randint(5, 500) for _ in range(1000)]
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=7, mega_batch_factor=16)
    epoch0 = list(sampler)
    assert epoch0 == list(sampler)  # same seed and epoch: same order (exact resume)
    assert sorted(i for b in epoch0 for i in b) == list(range(1000))
    assert len(epoch0) == len(sampler) == 125
    assert max(lengths[i] for i in epoch0[0]) == max(lengths)  # longest batch first
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    random_batches = [list(range(i, i + 8)) for i in range(0, 1000, 8)]
    grouped, unsorted = (
        padding_efficiency(lengths, epoch0),
        padding_efficiency(lengths, random_batches),
    )
    assert grouped > 0.9 > unsorted


def test_sampler_drop_last():
    sampler = LengthGroupedBatchSampler([3] * 10, 4, seed=0, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 and all(len(b) == 4 for b in batches)


# --------------------------------------------------------------------------- shared prefixes
SYSTEM = ("You triage support tickets. Read the ticket and answer with one short sentence that "
          "names the problem and the next step. Be polite, precise and brief.")


def _system_examples(tok, n: int = 8) -> list[TokenizedExample]:
    rng = random.Random(1)
    examples = []
    for i in range(n):
        turns = [{"role": "system", "content": SYSTEM},
                 {"role": "user", "content": " ".join(rng.sample(SENTENCES, rng.randint(1, 2)))},
                 {"role": "assistant", "content": rng.choice(SENTENCES)}]
        examples.append(Example(f"s{i}", turns))
    return tokenize_examples(tok, examples)


def test_shared_prefix_groups_the_system_prompt_and_never_a_trained_token(tok):
    examples = _system_examples(tok) + _chat_examples(tok, 3)  # 3 without the system prompt
    groups = shared_prefixes(examples, max_length=256, min_length=8)
    assert len(groups) == 1
    prefix, members = groups[0]
    assert sorted(members) == list(range(8))
    text = tok.decode(prefix)
    assert SYSTEM in text and "user" in text.split(SYSTEM)[1]  # through the user turn's header
    for m in members:
        assert examples[m].input_ids[: len(prefix)] == prefix
        assert all(t == IGNORE_INDEX for t in examples[m].labels[: len(prefix) + 1])
    packed = pack_examples(examples, max_length=256, share_prefix=True)
    assert sorted(e for r in packed.rows for e in r.example_ids) == sorted(e.id for e in examples)
    shared = [r for r in packed.rows if r.prefix_len]
    assert shared and all(r.input_ids[: r.prefix_len] == prefix for r in shared)
    assert sum(r.example_tokens for r in packed.rows) == sum(len(e) for e in examples)
    plain = pack_examples(examples, max_length=256)
    assert sum(len(r) for r in packed.rows) < 0.8 * sum(len(r) for r in plain.rows)


def test_shared_prefix_stops_before_a_trained_token(tok):
    a, b = _fake("a", 40), _fake("b", 40)  # every token trained
    assert shared_prefixes([a, b], max_length=64, min_length=8) == []


@pytest.mark.parametrize("attn", ["packed", "sdpa", "eager"])
def test_shared_prefix_rows_give_the_loss_and_gradients_of_examples_alone(tok, attn):
    examples = _system_examples(tok)
    packed = pack_examples(examples, max_length=320, share_prefix=True)
    assert all(r.prefix_len for r in packed.rows) and max(len(r.example_ids) for r in packed.rows) > 2
    model = build_model("llama", tok, attn="eager" if attn == "eager" else "sdpa")
    if attn == "packed":
        assert use_packed_attention(model)
    fmt, dtype = mask_format_for(model)
    batch = collate_packed(packed.rows, pad_id=tok.pad_token_id, mask_format=fmt, mask_dtype=dtype)
    extra = {"packed_segments": segment_bounds(batch["_seq_ids"])} if attn == "packed" else {}
    params = [p for p in model.parameters()]

    def grads_of(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"], **extra).logits
    packed_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                  ignore_index=IGNORE_INDEX, reduction="sum")
    packed_grads = grads_of(packed_loss)
    alone_loss = sum(F.cross_entropy(_alone(model, ex)[:-1], torch.tensor(ex.labels[1:]),
                                     ignore_index=IGNORE_INDEX, reduction="sum") for ex in examples)
    alone_grads = grads_of(alone_loss)
    assert torch.allclose(packed_loss, alone_loss, rtol=1e-5)
    worst = max((a - b).abs().max().item() / (b.abs().max().item() + 1e-12)
                for a, b in zip(packed_grads, alone_grads, strict=True))
    assert worst < 1e-4
