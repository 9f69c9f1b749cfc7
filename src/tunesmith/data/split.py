"""Leak-free train/validation/test split and the train/test contamination check.

Records are split by *group*, never individually: a group is the user's group key (customer,
document); near-duplicate clusters are collapsed to one record by dedup before the split, so
no near-copy can sit on the other side. Groups are ordered by a seeded hash of their key and cut
so each split gets its share of *records* (a group never straddles a cut).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import xxhash

from tunesmith.config import SplitConfig

SPLITS = ("train", "validation", "test")
_WORD = re.compile(r"\w+")


def assign_splits(groups: Sequence[str], cfg: SplitConfig, seed: int) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) for each record, given its group key.

    Every member of a group gets the same split. Group order is a seeded hash, and the
    cumulative record count decides the cut, so shares match the ratios up to one group.
    """
    keys, inverse, counts = np.unique(np.asarray(groups, dtype=object), return_inverse=True, return_counts=True)
    order = np.argsort([xxhash.xxh64_intdigest(k.encode(), seed=seed) for k in keys], kind="stable")
    total = counts.sum()
    # midpoint of each group's slice of [0, total): decides which ratio band it falls in
    cum = np.cumsum(counts[order]) - counts[order] / 2
    bounds = np.array([cfg.train, cfg.train + cfg.validation]) * total
    group_split = np.empty(len(keys), dtype=np.int8)
    group_split[order] = np.searchsorted(bounds, cum, side="right")
    return group_split[inverse]


def ngram_hashes(text: str, n: int, sample_mod: int = 1) -> np.ndarray:
    """64-bit hashes of the lowercase word n-grams of ``text`` (all of them when shorter than n).

    ``sample_mod > 1`` keeps only hashes divisible by it: a deterministic sample that keeps the
    overlap estimate unbiased while bounding memory on huge train splits.
    """
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    grams = [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))]
    hashes = np.fromiter((xxhash.xxh3_64_intdigest(g.encode()) for g in grams), dtype=np.uint64, count=len(grams))
    if sample_mod > 1:
        hashes = hashes[hashes % np.uint64(sample_mod) == 0]
    return np.unique(hashes)


def overlap_fractions(test_hashes: list[np.ndarray], train_hashes: np.ndarray) -> np.ndarray:
    """For each test example, the share of its n-grams that also occur in train."""
    train = np.unique(train_hashes)
    out = np.zeros(len(test_hashes))
    for i, h in enumerate(test_hashes):
        if len(h):
            out[i] = np.isin(h, train, assume_unique=True).mean()
    return out
