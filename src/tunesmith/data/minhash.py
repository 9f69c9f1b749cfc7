"""Near-duplicate detection: MinHash signatures, banded LSH, verified pairs, clusters.

Why our own and not ``datasketch``: datasketch hashes every shingle in Python and keeps
its LSH buckets in Python dicts. Here every step is a handful of numpy passes over a whole
batch (``benchmarks/bench_neardup.py`` measures both on the same corpus and prints the
ratio), and the index holds compact arrays so a million records fit in a few hundred MB.

The steps, and the one choice each makes:

1. **Words.** ``\\w+`` runs, lowercased, found without a regex: the batch is joined,
   decoded to code points (UTF-32) and looked up in one table that maps a code point to its
   lowercase form, or to 0 when it is not a word character. Word boundaries are the edges
   of the non-zero runs.
2. **Word hashes.** A polynomial hash of each word's code points, computed for all words at
   once from one prefix sum (``sum cp_k P^k``; a word is a difference of two prefix sums,
   rescaled by ``P^-start``; powers of an odd ``P`` are invertible mod 2^64), then mixed.
3. **Shingles.** ``ngram`` consecutive word hashes of one record, combined polynomially and
   mixed to 32 bits. A record with fewer words than ``ngram`` is one shingle of all its
   words; a record without words is one shingle of its whole (stripped, lowercased) text.
4. **MinHash.** ``num_perm`` hash functions ``(a*x + b) mod 2^32`` (odd ``a``), evaluated as
   one ``(num_perm × shingles)`` outer product per cache-sized chunk, reduced per record
   with ``np.minimum.reduceat`` along contiguous rows.
5. **LSH.** Each band of ``rows`` values is hashed to one 64-bit key; records sharing a key
   in any band are candidates (found by sorting the keys, not with dicts).
6. **Verify, then cluster.** A candidate pair is kept only when the share of equal
   signature values (the Jaccard estimate) reaches ``threshold``; union-find over the kept
   pairs gives clusters whose representative is their smallest index (the first record seen).

Every constant comes from a fixed SplitMix64 stream seeded by ``cfg.seed`` (never Python's
``hash()`` or numpy's RNG streams), so worker processes and later runs agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import xxhash

from tunesmith.config import NearDedupConfig

__all__ = ["NearDuplicateIndex", "signatures"]

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
# Characters per tokenising chunk and shingles per MinHash chunk: sized so the working
# arrays stay in cache (measured: 50-200 records of ~90 words per MinHash chunk is fastest).
_CHARS_PER_CHUNK = 1 << 20
_SHINGLES_PER_CHUNK = 1 << 13
# Buckets larger than this pair every member with the bucket's first and next member only,
# instead of all m(m-1)/2 pairs (large buckets are mostly copies of one text).
_MAX_BUCKET_ALL_PAIRS = 64
# Bits of each signature value the index keeps for verification: a chance match of two
# different 16-bit values (2^-16) biases the Jaccard estimate by < 0.00002.
_FP_DTYPE = np.uint16


# --------------------------------------------------------------------------- constants
def _splitmix64(seed: int, count: int) -> list[int]:
    """``count`` 64-bit values from SplitMix64: stable across platforms and numpy versions."""
    out, state = [], seed & _MASK64
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return out


# Word-hash base P and shingle base Q: fixed (not seeded) so that word hashes are the same
# for every config; the seed only picks the MinHash permutations.
_P, _Q = (v | 1 for v in _splitmix64(0x7475_6E65_736D_6974, 2))
_P_INV = pow(_P, -1, 1 << 64)


@cache
def _perm_params(seed: int, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``a`` (odd) and ``b`` of each permutation ``(a*x + b) mod 2^32``."""
    vals = _splitmix64(seed, 2 * num_perm)
    a = np.array([(v >> 32) | 1 for v in vals[:num_perm]], dtype=np.uint32)
    b = np.array([v >> 32 for v in vals[num_perm:]], dtype=np.uint32)
    return a, b


@cache
def _band_multipliers(seed: int, rows: int) -> np.ndarray:
    """Odd 64-bit multipliers that fold one band's ``rows`` values into one key."""
    return np.array([v | 1 for v in _splitmix64(seed ^ 0x6261_6E64, rows)], dtype=_U64)


@cache
def _fold_table() -> np.ndarray:
    """Code point -> its lowercase code point if it is a ``\\w`` character, else 0.

    Built once per process (~0.2 s) from Python's own ``str.isalnum``/``str.lower`` so it
    agrees with ``re``'s ``\\w`` for str patterns. U+0130 (İ), the one character whose
    ``lower()`` is two characters, folds to ``i``.
    """
    codes = np.arange(0x110000, dtype=np.uint32)
    codes[0xD800:0xE000] = 0  # lone surrogates cannot be encoded; they are not \w anyway
    codes[0x130] = ord("i")
    chars = codes.tobytes().decode("utf-32-le")
    lowered = np.frombuffer(chars.lower().encode("utf-32-le"), dtype=np.uint32)
    is_word = np.frombuffer(
        bytes(c.isalnum() or c == "_" for c in chars), dtype=np.bool_
    )
    table = np.where(is_word, lowered, 0).astype(np.uint32)
    table[0x130] = ord("i")
    return table


@cache
def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``P^k`` and ``P^-k`` mod 2^64 for k < n (cached: every chunk reuses them)."""
    up = np.full(n, _P, dtype=_U64)
    down = np.full(n, _P_INV, dtype=_U64)
    up[0] = down[0] = 1
    return np.cumprod(up, dtype=_U64), np.cumprod(down, dtype=_U64)


def _powers_for(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Powers for at least ``n`` positions; one cached size covers every ordinary chunk."""
    up, down = _powers(max(n, _CHARS_PER_CHUNK + 4096))
    return up, down


def _mix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: every input bit reaches every output bit."""
    h ^= h >> _U64(33)
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h
