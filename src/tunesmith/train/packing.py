"""Packing several examples into one row without letting them see each other, and
length-grouped batching for the unpacked mode.

Why the 4D mask: with ``sdpa`` or ``eager`` attention, reset ``position_ids`` alone do not
reliably stop a token from attending to the previous example in the row. transformers 5.23
infers example boundaries from them only when no attention mask AND no KV cache is passed
(``masking_utils._preprocess_mask_arguments``); a model called with its default
``use_cache=True``, or with a 2D padding mask, attends across examples (measured on a tiny
Llama: logits off by 0.25). A block-diagonal causal mask ``[B, 1, L, L]`` always works:
transformers passes a 4D mask through unchanged. Its format depends on
the attention kernel: ``sdpa`` takes a bool mask (True = may attend), while ``eager`` *adds*
the mask to the scores, so it needs an additive float mask (0 / dtype-min). Flash-attention
kernels take no mask: they find the example boundaries from the reset ``position_ids``.

Labels: transformers shifts labels inside the model, so the logit at an example's last token
would be trained to predict the next example's first token if that token had a label. The
first token of every packed example is therefore never a label.

Speed: a block-diagonal mask keeps examples apart but costs a full ``L x L`` attention per
row (sdpa cannot skip masked blocks), ~7x the causal work of 3-4 examples of ~280 tokens in a
1024 row; on a CPU that was ~35% of a LoRA step. :func:`use_packed_attention` registers an
sdpa variant that, given the rows' example boundaries (``packed_segments``, from
:func:`segment_bounds`), runs causal sdpa per example instead; called without them it is
plain sdpa, so generation and validation are unchanged.

Shared prefixes (``share_prefix``): chat data usually repeats one system prompt in every
example (155 of the sample project's ~280 tokens). Examples that start with the same tokens are
packed as ONE copy of that prefix followed by their remainders; every remainder keeps the
positions it has alone and attends to the prefix and to itself (``seq_ids``: prefix -2,
padding -1, examples 0..k). Causal attention makes the prefix's hidden states identical in
every example, so the loss equals the sum over the examples packed alone and the gradient is
the same sum (tested with dropout off; with dropout the prefix draws one mask, not one per
example): ~1.8x more examples per computed token on the sample project.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch.utils.data import Sampler

from tunesmith.errors import TunesmithError
from tunesmith.train.masks import IGNORE_INDEX, TokenizedExample

if TYPE_CHECKING:
    from transformers import PreTrainedModel

MaskFormat = Literal["bool", "float", "none"]
PREFIX_SEQ = -2  # seq id of a row's shared prefix (padding is -1)
MIN_SHARED_PREFIX = 32  # shorter common starts are not worth a group


@dataclass(slots=True)
class PackedRow:
    """One training row: several whole examples back to back.

    ``seq_ids[i]`` is the index (within the row) of the example token ``i`` belongs to
    (:data:`PREFIX_SEQ` for a shared prefix); ``position_ids`` restart at 0 for every example,
    or at ``prefix_len`` for examples that continue the row's shared prefix.
    ``example_tokens`` counts every example's full length, prefix included (what the examples
    are worth), while ``len(row)`` is what is computed.
    """

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    seq_ids: list[int] = field(default_factory=list)
    example_ids: list[str] = field(default_factory=list)
    prefix_len: int = 0
    example_tokens: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @classmethod
    def with_prefix(cls, prefix: Sequence[int]) -> PackedRow:
        n = len(prefix)
        return cls(input_ids=list(prefix), labels=[IGNORE_INDEX] * n, position_ids=list(range(n)),
                   seq_ids=[PREFIX_SEQ] * n, prefix_len=n)

    def add(self, ex: TokenizedExample, max_length: int) -> None:
        """Append ``ex`` (cut to ``max_length`` tokens in all); after a shared prefix, only the
        part of ``ex`` beyond it."""
        n, start = min(len(ex), max_length), self.prefix_len
        self.input_ids.extend(ex.input_ids[start:n])
        # No label on the first token: it would be predicted from the previous example
        # (after a prefix it is untrained anyway: see shared_prefixes).
        self.labels.extend([IGNORE_INDEX, *ex.labels[start + 1 : n]])
        self.position_ids.extend(range(start, n))
        self.seq_ids.extend([len(self.example_ids)] * (n - start))
        self.example_ids.append(ex.id)
        self.example_tokens += n


@dataclass(slots=True)
class PackResult:
    rows: list[PackedRow]
    max_length: int
    truncated: list[str] = field(default_factory=list)  # ids cut to max_length
    dropped: list[str] = field(default_factory=list)  # ids left out (overlong="drop")

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.rows)

    @property
    def efficiency(self) -> float:
        """Real tokens / (rows x max_length): 1.0 means no padding at all."""
        return self.tokens / (len(self.rows) * self.max_length) if self.rows else 0.0


def pack_examples(
    examples: Sequence[TokenizedExample],
    *,
    max_length: int,
    overlong: Literal["truncate", "drop"] = "truncate",
    share_prefix: bool = False,
) -> PackResult:
    """Best-fit-decreasing packing of whole examples into rows of at most ``max_length``.

    Examples are placed longest first, each into the row whose free space fits it most
    tightly (a sorted list of free capacities keeps this O(n log n)). An example is never
    split across rows; one longer than ``max_length`` is truncated or dropped. With
    ``share_prefix``, each group of examples found by :func:`shared_prefixes` is packed into
    rows that start with one copy of the group's prefix.
    """
    if max_length < 2:
        raise TunesmithError(f"max_length must be at least 2, got {max_length}")
    result = PackResult(rows=[], max_length=max_length)
    kept = []
    for i, ex in enumerate(examples):
        if len(ex) > max_length:
            (result.truncated if overlong == "truncate" else result.dropped).append(ex.id)
            if overlong == "drop":
                continue
        kept.append(i)
    groups = shared_prefixes([examples[i] for i in kept], max_length) if share_prefix else []
    grouped: set[int] = set()
    for prefix, members in groups:
        members = [kept[m] for m in members]
        grouped.update(members)
        _pack_into(result, examples, members, max_length, prefix)
    _pack_into(result, examples, [i for i in kept if i not in grouped], max_length, [])
    return result


def _pack_into(result: PackResult, examples: Sequence[TokenizedExample], indices: list[int],
               max_length: int, prefix: Sequence[int]) -> None:
    """Best-fit-decreasing of ``examples[indices]`` into new rows starting with ``prefix``."""
    start = len(prefix)
    order = sorted(indices, key=lambda i: (-len(examples[i]), i))
    free: list[tuple[int, int]] = []  # (free capacity, row index), sorted
    for i in order:
        ex = examples[i]
        n = min(len(ex), max_length) - start
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            cap, row = free.pop(k)
        else:
            cap, row = max_length - start, len(result.rows)
            result.rows.append(PackedRow.with_prefix(prefix) if prefix else PackedRow())
        result.rows[row].add(ex, max_length)
        if cap - n > 1:  # a gap of one token cannot hold an example with a trained token
            bisect.insort(free, (cap - n, row))


def shared_prefixes(examples: Sequence[TokenizedExample], max_length: int,
                    min_length: int = MIN_SHARED_PREFIX) -> list[tuple[list[int], list[int]]]:
    """Groups of examples (indices) that start with the same tokens, and that prefix.

    Examples are grouped by their first ``min_length`` tokens; a group's prefix is its longest
    common start, shortened until no token in it, nor the first token after it, is trained
    (a remainder's first token is predicted from whatever precedes it in the row) and every
    member keeps at least one token of its own. Prefixes are capped at half of ``max_length``
    so a row holds more than one remainder. Groups of one, or whose prefix ends up shorter
    than ``min_length``, are left out (packed normally).
    """
    by_start: dict[tuple[int, ...], list[int]] = {}
    for i, ex in enumerate(examples):
        if len(ex) > min_length:
            by_start.setdefault(tuple(ex.input_ids[:min_length]), []).append(i)
    groups = []
    for members in by_start.values():
        if len(members) < 2:
            continue
        first = examples[members[0]].input_ids
        n = min(min(len(examples[m]) for m in members) - 1, max_length // 2)
        for m in members[1:]:
            ids = examples[m].input_ids
            k = min_length
            while k < n and ids[k] == first[k]:
                k += 1
            n = k
        for m in members:
            labels = examples[m].labels
            trained = next((j for j in range(n + 1) if labels[j] != IGNORE_INDEX), None)
            if trained is not None:
                n = trained - 1  # token `trained` must start the remainder, unlabelled: cut before
        if n >= min_length:
            groups.append((list(first[:n]), members))
    return groups


# --------------------------------------------------------------------------- masks
def block_causal_mask(seq_ids: torch.Tensor, *, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """``[B, L]`` sequence ids -> ``[B, 1, L, L]`` block-diagonal causal mask.

    Token i may attend to token j iff j <= i and both belong to the same example, or j is in
    the row's shared prefix (id -2). Padding (id -1) attends only to itself, so no row is fully
    masked (that gives NaN in sdpa).
    bool: True = attend. Float: 0 = attend, dtype-min = blocked (added to the scores).
    """
    length = seq_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    prefix = (seq_ids[:, None, :] == PREFIX_SEQ) & (seq_ids[:, :, None] != -1)
    keep = ((same | prefix) & causal & (seq_ids[:, None, :] != -1)) | torch.eye(
        length, dtype=torch.bool, device=seq_ids.device
    )
    keep = keep[:, None]
    if dtype == torch.bool:
        return keep
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=seq_ids.device)
    return torch.where(keep, torch.zeros((), dtype=dtype, device=seq_ids.device), blocked)


def mask_format_for(model: PreTrainedModel) -> tuple[MaskFormat, torch.dtype]:
    """The mask the model's attention kernel needs, and the float dtype for ``float``."""
    impl = model.config._attn_implementation or "eager"
    if impl.startswith(("flash_attention", "kernels-community/flash")):
        return "none", model.dtype
    if impl in ("sdpa", PACKED_ATTENTION):
        return "bool", model.dtype
    if impl == "eager":
        return "float", model.dtype
    raise TunesmithError(
        f"packing does not support attn_implementation={impl!r}; use sdpa, eager or "
        "flash_attention_2, or turn packing off"
    )


# --------------------------------------------------------------------------- packed attention
PACKED_ATTENTION = "tunesmith_packed_sdpa"


def segment_bounds(seq_ids: torch.Tensor) -> list[tuple[int, list[int]]]:
    """``[B, L]`` packed seq ids -> per row ``(prefix_len, [start_1, ..., start_k, L])``.

    ``prefix_len`` is the row's shared-prefix length (0 without one); the starts are where
    each example (or the row's padding, which attends only to itself) begins after it.
    """
    out = []
    for row in seq_ids.cpu():
        prefix = int((row == PREFIX_SEQ).sum())
        rest = row[prefix:]
        starts = (torch.nonzero(rest[1:] != rest[:-1]).flatten() + 1 + prefix).tolist()
        out.append((prefix, [prefix, *starts, len(row)]))
    return out


def packed_sdpa_attention(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
    packed_segments: list[tuple[int, list[int]]] | None = None, **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal sdpa per packed example, else plain sdpa.

    With ``packed_segments`` (from :func:`segment_bounds`) the block-diagonal
    ``attention_mask`` is redundant and ignored: each example's queries attend to its own keys
    with ``is_causal``, which lets the kernel skip the upper triangle and never touch the
    cross-example blocks; after a shared prefix, to the prefix's keys and then its own (causal).
    Shapes follow transformers: query ``[B, H, L, D]``, key/value ``[B, H_kv, L, D]``, output
    ``[B, L, H, D]``.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if packed_segments is None or query.shape[2] != key.shape[2]:  # not a packed training row
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    rows = []
    for q, k, v, (prefix, bounds) in zip(query.unbind(0), key.unbind(0), value.unbind(0), packed_segments,
                                         strict=True):
        sizes = [end - start for start, end in itertools.pairwise(bounds)]
        # split (not slicing) so the backward pass concatenates gradients instead of summing zeros
        qp, qs = q.split([prefix, q.shape[1] - prefix], 1)
        kp, ks = k.split([prefix, k.shape[1] - prefix], 1)
        vp, vs = v.split([prefix, v.shape[1] - prefix], 1)
        parts = [sdpa(qp[None], kp[None], vp[None], dropout_p=dropout, scale=scaling, is_causal=True)] if prefix else []
        for qi, ki, vi in zip(qs.split(sizes, 1), ks.split(sizes, 1), vs.split(sizes, 1), strict=True):
            mask = None  # alone: plain causal
            if prefix:  # the whole prefix, then causal within the example
                n = qi.shape[1]
                ki, vi = torch.cat([kp, ki], 1), torch.cat([vp, vi], 1)
                mask = torch.ones(n, prefix + n, dtype=torch.bool, device=q.device).tril(diagonal=prefix)
            parts.append(sdpa(qi[None], ki[None], vi[None], attn_mask=mask, dropout_p=dropout, scale=scaling,
                              is_causal=mask is None))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def use_packed_attention(model: torch.nn.Module) -> bool:
    """Switch an sdpa model (plain, PEFT-wrapped) to :func:`packed_sdpa_attention`.

    Returns False (and changes nothing) for other attention kernels: eager needs its additive
    mask, flash-attention already reads the boundaries from position ids.
    """
    from transformers import AttentionInterface, PreTrainedModel
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, PreTrainedModel) or base.config._attn_implementation != "sdpa":
        return base.config._attn_implementation == PACKED_ATTENTION
    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)  # masks as for sdpa
    base.set_attn_implementation(PACKED_ATTENTION)  # a model that cannot switch keeps sdpa (and its mask)
    return base.config._attn_implementation == PACKED_ATTENTION


def _pad(seqs: Sequence[Sequence[int]], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def _padded_length(longest: int, multiple: int | None) -> int:
    return longest if not multiple else math.ceil(longest / multiple) * multiple


def collate_packed(
    rows: Sequence[PackedRow],
    *,
    pad_id: int,
    mask_format: MaskFormat = "bool",
    mask_dtype: torch.dtype = torch.float32,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Tensors for a batch of packed rows: input_ids, labels, position_ids, attention_mask.

    Pick ``mask_format``/``mask_dtype`` with :func:`mask_format_for`. With ``none`` no
    attention_mask is returned (flash-attention reads boundaries from position_ids).
    """
    length = _padded_length(max(len(r) for r in rows), pad_to_multiple_of)
    batch = {
        "input_ids": _pad([r.input_ids for r in rows], length, pad_id),
        "labels": _pad([r.labels for r in rows], length, IGNORE_INDEX),
        # Padding continues counting: a reset there would look like another example start.
        "position_ids": torch.stack(
            [torch.as_tensor(r.position_ids + _tail(r, length)) for r in rows]
        ),
    }
    seq_ids = _pad([r.seq_ids for r in rows], length, -1)
    batch["_seq_ids"] = seq_ids  # "_": not a model input (the trainer's per-example attention)
    if mask_format != "none":
        dtype = torch.bool if mask_format == "bool" else mask_dtype
        batch["attention_mask"] = block_causal_mask(seq_ids, dtype=dtype)
    elif any(r.prefix_len for r in rows):
        raise TunesmithError("shared-prefix rows need sdpa or eager attention (flash-attention "
                             "reads example boundaries from position ids): set train.share_prefix: false")
    return batch


def _tail(row: PackedRow, length: int) -> list[int]:
    last = row.position_ids[-1] if row.position_ids else -1
    return list(range(last + 1, last + 1 + length - len(row)))


def collate_padded(
    examples: Sequence[TokenizedExample],
    *,
    pad_id: int,
    max_length: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Unpacked mode: right-pad truncated examples; 2D attention mask, pad labels ignored."""
    ids = [ex.input_ids[:max_length] for ex in examples]
    length = _padded_length(max(len(s) for s in ids), pad_to_multiple_of)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for i, s in enumerate(ids):
        mask[i, : len(s)] = 1
    return {
        "input_ids": _pad(ids, length, pad_id),
        "labels": _pad([ex.labels[:max_length] for ex in examples], length, IGNORE_INDEX),
        "attention_mask": mask,
    }


# --------------------------------------------------------------------------- batching
class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length for the unpacked mode, shuffled but deterministic.

    Each epoch: a seeded permutation is cut into mega-batches of ``batch_size x
    mega_batch_factor``; each is sorted by length and cut into batches (little padding);
    batch order is shuffled so lengths do not trend through the epoch; the batch holding the
    longest example goes first, so an out-of-memory shows at step 1, not hours in. The order
    depends only on ``seed`` and the epoch (``set_epoch``), which exact resume relies on.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        seed: int,
        mega_batch_factor: int = 50,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = batch_size * mega_batch_factor
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=gen).tolist()
        batches = []
        for lo in range(0, len(perm), self.mega):
            group = sorted(perm[lo : lo + self.mega], key=lambda i: -self.lengths[i])
            batches += [
                group[j : j + self.batch_size] for j in range(0, len(group), self.batch_size)
            ]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        order = torch.randperm(len(batches), generator=gen).tolist()
        batches = [batches[i] for i in order]
        if batches:
            first = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            batches[0], batches[first] = batches[first], batches[0]
        yield from batches


def padding_efficiency(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Real tokens / padded tokens over the given batches (1.0 = no padding)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return real / padded if padded else 0.0
