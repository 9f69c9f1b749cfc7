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
4. **MinHash.** ``num_perm`` hash functions ``(a*x + b) mod 2^32`` (odd ``a``) of the
   (already well-mixed) shingle hashes, evaluated as one ``(num_perm × shingles)`` outer
   product per cache-sized chunk, reduced per record with ``np.minimum.reduceat`` along
   contiguous rows. Measured: the Jaccard estimate's spread matches the theory for
   independent permutations, ``sqrt(J(1-J)/num_perm)``.
5. **LSH.** Each band of ``rows`` values is hashed to one 64-bit key; records sharing a key
   in any band are candidates (found by sorting the keys, not with dicts).
6. **Verify, then cluster.** A candidate pair is kept only when the share of equal
   signature values (the Jaccard estimate) reaches ``threshold``; union-find over the kept
   pairs gives clusters whose representative is their smallest index (the first record seen).

Every constant comes from SplitMix64 (fixed seeds for the word and shingle hashes,
``cfg.seed`` for the permutations), never from Python's ``hash()`` or numpy's RNG streams,
so worker processes and later runs agree bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

import numpy as np
import xxhash

from tunesmith.config import NearDedupConfig

__all__ = ["NearDuplicateIndex", "shingle_hashes", "signatures"]

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
_NON_WORD = re.compile(r"\W")
_PAIR_DTYPE = np.dtype([("i", np.int64), ("j", np.int64), ("jaccard", np.float32)])


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

    Built once per process (~0.05 s) with ``re`` itself, so "word character" means exactly
    what ``\\w`` means to Python. U+0130 (İ), the one character whose ``lower()`` is two
    characters, folds to ``i``.
    """
    codes = np.arange(0x110000, dtype=np.uint32)
    codes[0xD800:0xE000] = 0  # lone surrogates cannot be encoded; they are not \w anyway
    codes[0x130] = ord("i")
    chars = codes.tobytes().decode("utf-32-le")
    lowered = np.frombuffer(chars.lower().encode("utf-32-le"), dtype=np.uint32)
    table = np.zeros(len(codes), dtype=np.uint32)
    for run in re.finditer(r"\w+", chars):
        table[run.start() : run.end()] = lowered[run.start() : run.end()]
    return table


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``P^k`` and ``P^-k`` mod 2^64 for k < n."""
    up = np.full(n, _P, dtype=_U64)
    down = np.full(n, _P_INV, dtype=_U64)
    up[0] = down[0] = 1
    return np.cumprod(up, dtype=_U64), np.cumprod(down, dtype=_U64)


@cache
def _chunk_powers() -> tuple[np.ndarray, np.ndarray]:
    """Powers for one chunk (16 MB, built once per process and reused by every chunk)."""
    return _powers(2 * _CHARS_PER_CHUNK)


def _powers_for(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Powers for at least ``n`` positions (a chunk can exceed the budget by one text)."""
    up, down = _chunk_powers()
    return (up, down) if n <= len(up) else _powers(n)


def _mix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: every input bit reaches every output bit."""
    h ^= h >> _U64(33)
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h


# --------------------------------------------------------------------------- signatures
def signatures(texts: Sequence[str], cfg: NearDedupConfig) -> np.ndarray:
    """MinHash signatures of ``texts``: an ``(len(texts), cfg.num_perm)`` uint32 array.

    Pure and deterministic (the same texts and config give the same array in any process),
    so workers can compute signatures of their batches in parallel and the driver only
    indexes them. Works in chunks of about a million characters, so memory stays flat.
    """
    texts = _as_str_list(texts)
    a, b = _perm_params(cfg.seed, cfg.num_perm)
    out = np.empty((len(texts), cfg.num_perm), dtype=np.uint32)
    for lo, hi in _chunks(texts):
        part = texts[lo:hi]
        words, first = _giant_word_hashes(part[0]) if _is_giant(part) else _word_hashes(part)
        shingles, seg = _shingle_hashes(words, first, part, cfg.ngram)
        out[lo:hi] = _minhash((shingles >> _U64(32)).astype(np.uint32), seg, a, b)
    return out


def shingle_hashes(texts: Sequence[str], ngram: int) -> list[np.ndarray]:
    """64-bit hashes of each text's word n-grams (the shingles above), one array per text.

    The contamination check compares test and train n-grams with these: the same vectorised
    tokeniser, ~100x faster than hashing n-gram strings one by one in Python.
    """
    texts = _as_str_list(texts)
    out: list[np.ndarray] = []
    for lo, hi in _chunks(texts):
        part = texts[lo:hi]
        words, first = _giant_word_hashes(part[0]) if _is_giant(part) else _word_hashes(part)
        hashes, seg = _shingle_hashes(words, first, part, ngram)
        out += np.split(hashes, seg[1:-1])
    return out


def _as_str_list(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, with a clear error naming the first item that is not a str."""
    texts = texts if isinstance(texts, list) else list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"signatures: texts[{i}] is {type(t).__name__}, expected str")
    return texts


def _chunks(texts: list[str]) -> list[tuple[int, int]]:
    """``(lo, hi)`` ranges of texts holding about ``_CHARS_PER_CHUNK`` characters each;
    a text longer than that is a chunk of its own."""
    if not texts:
        return []
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    ends = np.cumsum(lengths + 1)
    cuts = np.searchsorted(ends, np.arange(_CHARS_PER_CHUNK, int(ends[-1]), _CHARS_PER_CHUNK))
    giants = np.flatnonzero(lengths > _CHARS_PER_CHUNK)
    bounds = np.unique(np.concatenate(([0, len(texts)], cuts + 1, giants, giants + 1)))
    bounds = bounds[bounds <= len(texts)]
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def _is_giant(part: list[str]) -> bool:
    return len(part) == 1 and len(part[0]) > _CHARS_PER_CHUNK


def _giant_word_hashes(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``_word_hashes`` of one very long text, in pieces of about ``_CHARS_PER_CHUNK``
    characters so memory stays bounded. Each cut is at a non-word character, so no word is
    split and the words (hence the signature) are exactly those of the whole text."""
    pieces, pos = [], 0
    while len(text) - pos > _CHARS_PER_CHUNK:
        cut = _NON_WORD.search(text, pos + _CHARS_PER_CHUNK)
        if cut is None:
            break
        pieces.append(text[pos : cut.start()])
        pos = cut.start()
    pieces.append(text[pos:])
    words = np.concatenate([_word_hashes([p])[0] for p in pieces])
    return words, np.array([0, len(words)], dtype=np.int64)


def _word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mixed 64-bit hash of every lowercased ``\\w+`` word of ``texts``, in order.

    Returns ``(hashes, first)``: text ``d``'s words are ``hashes[first[d]:first[d + 1]]``.
    """
    # Code point 0 before, between and after the texts: it is not a word character, so no
    # word spans two texts and every word has a non-word neighbour on both sides.
    joined = "\x00" + "\x00".join(texts) + "\x00"
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    folded = np.take(_fold_table(), cps)
    is_word = folded != 0
    edges = np.flatnonzero(is_word[1:] != is_word[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]
    up, down = _powers_for(len(cps))
    prefix = np.cumsum(folded * up[: len(cps)], dtype=_U64)
    # sum_{k=s}^{e-1} cp_k P^k, rescaled by P^-s so equal words hash equally anywhere.
    hashes = _mix64((prefix[ends - 1] - prefix[starts - 1]) * down[starts])
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    text_starts = np.concatenate(([1], 1 + np.cumsum(lengths + 1)))
    return hashes, np.searchsorted(starts, text_starts)


def _shingle_hashes(
    words: np.ndarray, first: np.ndarray, texts: list[str], ngram: int
) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word n-grams, grouped by text.

    Returns ``(hashes, seg)``: text ``d``'s shingles are ``hashes[seg[d]:seg[d + 1]]``;
    every text has at least one (see the module docstring for short and empty texts).
    """
    counts = np.diff(first)
    n_full = np.maximum(counts - ngram + 1, 0)
    seg = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.maximum(n_full, 1), out=seg[1:])
    out = np.empty(int(seg[-1]), dtype=_U64)
    short = np.flatnonzero((counts > 0) & (counts < ngram))
    acc = words.copy()  # after step j: acc[i] combines words[i .. i + j]
    for j in range(1, ngram):
        acc = acc[:-1] * _U64(_Q) + words[j:]
        done = short[counts[short] == j + 1]
        out[seg[done]] = acc[first[done]]
    short_one = short[counts[short] == 1]
    out[seg[short_one]] = words[first[short_one]]
    full = np.flatnonzero(n_full)
    src = _ragged_arange(first[full], n_full[full])
    out[src + np.repeat(seg[full] - first[full], n_full[full])] = acc[src]
    for d in np.flatnonzero(counts == 0).tolist():
        # No words at all: the whole text is the one shingle (so "" matches "" only).
        whole = texts[d].strip().lower().encode("utf-8", "surrogatepass")
        out[seg[d]] = xxhash.xxh3_64_intdigest(whole)
    return _mix64(out), seg


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])`` without a loop."""
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(offsets.size, dtype=np.int64) + offsets


def _minhash(shingles: np.ndarray, seg: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per text and permutation, the minimum of ``(a*x + b) mod 2^32`` over its shingles."""
    out = np.full((len(seg) - 1, len(a)), np.iinfo(np.uint32).max, dtype=np.uint32)
    buf = np.empty((len(a), min(_SHINGLES_PER_CHUNK, len(shingles))), dtype=np.uint32)
    for lo in range(0, len(shingles), _SHINGLES_PER_CHUNK):
        hi = min(lo + _SHINGLES_PER_CHUNK, len(shingles))
        # Texts overlapping [lo, hi); the first and last may continue in other chunks,
        # which is why the result is min-merged into ``out`` rather than assigned.
        d0 = int(np.searchsorted(seg, lo, side="right")) - 1
        d1 = int(np.searchsorted(seg, hi, side="left"))
        local = np.maximum(seg[d0:d1] - lo, 0)
        # (num_perm × chunk) layout: reduceat then reduces contiguous memory (measured
        # 4-10x faster than the (chunk × num_perm) layout).
        v = buf[:, : hi - lo]
        np.multiply.outer(a, shingles[lo:hi], out=v)
        v += b[:, None]
        part = np.minimum.reduceat(v, local, axis=1)
        np.minimum(out[d0:d1], part.T, out=out[d0:d1])
    return out


# --------------------------------------------------------------------------- index
class _RowStore:
    """Append-only rows kept in fixed-size blocks: growing never copies what is stored,
    so the peak memory is the data itself (a doubling array would briefly need 2-3x)."""

    BLOCK = 1 << 16

    def __init__(self, width: int, dtype: type):
        self.width, self.dtype = width, dtype
        self.blocks: list[np.ndarray] = []
        self.n = 0

    def append(self, rows: np.ndarray) -> None:
        done = 0
        while done < len(rows):
            used = self.n % self.BLOCK
            if used == 0:
                self.blocks.append(np.empty((self.BLOCK, self.width), dtype=self.dtype))
            take = min(self.BLOCK - used, len(rows) - done)
            self.blocks[-1][used : used + take] = rows[done : done + take]
            done += take
            self.n += take

    def column(self, c: int) -> np.ndarray:
        """Column ``c`` of all rows, as one array."""
        if not self.blocks:
            return np.empty(0, dtype=self.dtype)
        return np.concatenate([blk[:, c] for blk in self.blocks])[: self.n]

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (global row numbers)."""
        out = np.empty((len(idx), self.width), dtype=self.dtype)
        block_of = idx // self.BLOCK
        for blk in np.unique(block_of).tolist():
            sel = np.flatnonzero(block_of == blk)
            out[sel] = self.blocks[blk][idx[sel] - blk * self.BLOCK]
        return out


class NearDuplicateIndex:
    """Banded MinHash LSH over signatures from :func:`signatures`, with verified clusters.

    Records get indices 0, 1, 2, ... in the order they are added. :meth:`clusters` maps each
    to its cluster's smallest index, so keeping ``i`` where ``clusters()[i] == i`` keeps the
    first-seen record of every cluster. Memory per record: one 64-bit key per band plus
    16 bits per permutation (~384 bytes at 128 permutations and 16 bands).
    """

    def __init__(self, cfg: NearDedupConfig):
        self.cfg = cfg
        self._keys = _RowStore(cfg.bands, np.uint64)
        self._fps = _RowStore(cfg.num_perm, _FP_DTYPE)
        self._result: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._keys.n

    def add(self, sigs: np.ndarray) -> None:
        """Index a batch of signatures (rows of ``signatures()`` for the same config)."""
        sigs = np.asarray(sigs)
        if sigs.ndim != 2 or sigs.shape[1] != self.cfg.num_perm:
            raise ValueError(
                f"NearDuplicateIndex.add: expected signatures of shape (n, {self.cfg.num_perm}) "
                f"(num_perm), got {sigs.shape}"
            )
        if sigs.dtype != np.uint32:
            raise TypeError(f"NearDuplicateIndex.add: expected uint32 signatures, got {sigs.dtype}")
        self._keys.append(_band_keys(sigs, self.cfg))
        self._fps.append(sigs.astype(_FP_DTYPE))  # the low 16 bits of every value
        self._result = None

    def clusters(self) -> np.ndarray:
        """For each record, the smallest index in its cluster (itself when it has none)."""
        return self._compute()[0]

    def similar_pairs(self) -> np.ndarray:
        """The verified pairs: a structured array with fields ``i < j`` and ``jaccard``
        (the signature estimate, >= threshold), sorted by ``(i, j)``. Clusters are the
        connected components of these pairs."""
        return self._compute()[1]

    def _compute(self) -> tuple[np.ndarray, np.ndarray]:
        if self._result is None:
            n = len(self)
            i, j = _candidate_pairs(self._keys, n)
            matches = self._matches(i, j)
            # Compare counts, not float shares: 80 of 100 values at threshold 0.8 passes.
            ok = matches >= self.cfg.threshold * self.cfg.num_perm - 1e-9
            pairs = np.empty(int(ok.sum()), dtype=_PAIR_DTYPE)
            pairs["i"], pairs["j"] = i[ok], j[ok]
            pairs["jaccard"] = matches[ok] / self.cfg.num_perm
            self._result = (_components(n, i[ok], j[ok]), pairs)
        return self._result

    def _matches(self, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
        """Number of equal signature values of each pair (equal in their kept 16 bits: two
        different values agree by chance with probability 2^-16, a negligible bias)."""
        out = np.empty(len(i), dtype=np.int64)
        for lo in range(0, len(i), chunk):
            eq = self._fps.take(i[lo : lo + chunk]) == self._fps.take(j[lo : lo + chunk])
            out[lo : lo + chunk] = np.count_nonzero(eq, axis=1)
        return out


def _band_keys(sigs: np.ndarray, cfg: NearDedupConfig) -> np.ndarray:
    """One 64-bit key per band: ``sum_r value_r * M_r mod 2^64`` (odd random ``M_r``).
    Two different bands collide with probability ~2^-64; a collision only adds a candidate,
    which verification then rejects."""
    mult = _band_multipliers(cfg.seed, cfg.rows)
    bands = sigs.reshape(len(sigs), cfg.bands, cfg.rows).astype(_U64)
    return np.sum(bands * mult, axis=2, dtype=_U64)


def _candidate_pairs(keys: _RowStore, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``(i, j)``, ``i < j``, of records that share a key in at least one band."""
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    found = [_bucket_pairs(keys.column(b)) for b in range(keys.width)]
    code = np.unique(np.concatenate([i * n + j for i, j in found]))
    return code // n, code % n


def _bucket_pairs(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, of records with equal keys in one band.

    A bucket of up to ``_MAX_BUCKET_ALL_PAIRS`` records yields all its pairs; a larger one
    pairs each member with the bucket's first record and with the next one, which keeps
    the work linear and still connects every member that is similar to either.
    """
    order = np.argsort(col, kind="stable")  # stable: a bucket lists its records in order
    keys = col[order]
    same = keys[1:] == keys[:-1]
    in_bucket = np.zeros(len(col), dtype=bool)
    in_bucket[1:] |= same
    in_bucket[:-1] |= same
    pos = np.flatnonzero(in_bucket)  # usually a small share of all records
    if not len(pos):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ids, keys = order[pos], keys[pos]
    run_start = np.concatenate(([True], keys[1:] != keys[:-1]))
    run = np.cumsum(run_start) - 1
    starts = np.flatnonzero(run_start)
    sizes = np.diff(np.append(starts, len(pos)))
    small = sizes[run] <= _MAX_BUCKET_ALL_PAIRS
    out_i, out_j = [], []
    for d in range(1, int(sizes[sizes <= _MAX_BUCKET_ALL_PAIRS].max(initial=1))):
        ok = (run[:-d] == run[d:]) & small[:-d]
        out_i.append(ids[:-d][ok])
        out_j.append(ids[d:][ok])
    big = ~small
    if big.any():
        chain = (run[:-1] == run[1:]) & big[:-1]
        star = big & ~run_start
        out_i += [ids[:-1][chain], ids[starts[run[star]]]]
        out_j += [ids[1:][chain], ids[star]]
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the edges ``(i, j)``: each node -> the smallest node of its
    component. Vectorised union-find: hook every root to the smallest root it shares an
    edge with, then pointer-jump until each node points at a root; repeat until no edge
    joins two roots. Pointers only ever go to smaller nodes, so the smallest node of a
    component is never hooked and ends up its root."""
    rep = np.arange(n, dtype=np.int64)
    while len(i):
        ri, rj = rep[i], rep[j]
        differ = ri != rj
        if not differ.any():
            break
        i, j, ri, rj = i[differ], j[differ], ri[differ], rj[differ]
        np.minimum.at(rep, np.maximum(ri, rj), np.minimum(ri, rj))
        while True:
            nxt = rep[rep]
            if np.array_equal(nxt, rep):
                break
            rep = nxt
    return rep
