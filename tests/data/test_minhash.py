"""MinHash signatures, LSH index and clusters (tunesmith.data.minhash)."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.config import NearDedupConfig
from tunesmith.data import minhash
from tunesmith.data.minhash import NearDuplicateIndex, signatures

CFG = NearDedupConfig()
VOCAB = [f"w{k}" for k in range(3000)]


def doc(seed: int, n_words: int = 100) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(VOCAB[k] for k in rng.integers(len(VOCAB), size=n_words))


def edit(text: str, n_edits: int, seed: int) -> str:
    """Replace ``n_edits`` words, spread evenly so their shingles do not overlap."""
    words = text.split()
    rng = np.random.default_rng(seed)
    for k in range(n_edits):
        words[(k * len(words)) // n_edits + 2] = f"new{rng.integers(10**6)}"
    return " ".join(words)


def shingles(text: str, n: int = 5) -> set:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[k : k + n]) for k in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def cluster(texts: list[str], cfg: NearDedupConfig = CFG) -> np.ndarray:
    index = NearDuplicateIndex(cfg)
    index.add(signatures(texts, cfg))
    return index.clusters()


# --------------------------------------------------------------------------- signatures
def test_signature_shape_dtype_and_identical_texts():
    sigs = signatures([doc(1), doc(1), doc(2)], CFG)
    assert sigs.shape == (3, 128) and sigs.dtype == np.uint32
    assert (sigs[0] == sigs[1]).all()
    assert (sigs[0] == sigs[2]).mean() < 0.1


def test_case_punctuation_and_whitespace_do_not_change_the_signature():
    text = "The quick brown fox jumps over the lazy dog, again and again."
    variant = "the QUICK brown fox -- jumps\nover  the lazy dog again, and again!!"
    sigs = signatures([text, variant], CFG)
    assert (sigs[0] == sigs[1]).all()


def test_non_ascii_words_are_words():
    # Curly quotes and dashes separate words; accented letters and CJK belong to them.
    a = "“Élan” — naïve café in 東京 is über-cool"
    b = "élan naïve CAFÉ in 東京 is über cool"
    c = "elan naive cafe in 東京 is uber cool"
    sigs = signatures([a, b, c], CFG)
    assert (sigs[0] == sigs[1]).all()
    assert not (sigs[0] == sigs[2]).all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=6), st.sampled_from([" ", ", ", "\n", "-", "İ"])), max_size=30))
def test_tokeniser_matches_python_re_word_rule(parts):
    """Our numpy tokeniser finds exactly Python's ``\\w+`` words, lowercased."""
    text = "".join(parts)
    words = [w.replace("İ", "i").lower() for w in re.findall(r"\w+", text)]
    if not words:  # no words: the whole text is the shingle (tested separately)
        return
    ours, ref = signatures([text, " ".join(words)], CFG)
    assert (ours == ref).all()


def test_estimate_tracks_exact_jaccard():
    errors = []
    for k in range(60):
        a = doc(100 + k)
        b = edit(a, n_edits=k % 12, seed=k)
        sa, sb = signatures([a, b], CFG)
        errors.append(abs((sa == sb).mean() - jaccard(a, b)))
    # One estimate has standard deviation <= 0.044 at 128 permutations.
    assert np.mean(errors) < 0.03
    assert max(errors) < 0.16


def test_deterministic_across_calls_and_chunking(monkeypatch):
    texts = [doc(k, 40 + k) for k in range(50)] + ["", "a b", "word " * 5000]
    first = signatures(texts, CFG)
    assert (signatures(texts, CFG) == first).all()
    # Tiny chunks: texts and shingle runs split across chunks, a "giant" text cut in
    # pieces at non-word characters; the signatures must not change.
    monkeypatch.setattr(minhash, "_CHARS_PER_CHUNK", 300)
    monkeypatch.setattr(minhash, "_SHINGLES_PER_CHUNK", 7)
    minhash._chunk_powers.cache_clear()
    try:
        assert (signatures(texts, CFG) == first).all()
    finally:
        minhash._chunk_powers.cache_clear()


def test_giant_text_is_tokenised_in_bounded_pieces(monkeypatch):
    monkeypatch.setattr(minhash, "_CHARS_PER_CHUNK", 300)
    seen: list[int] = []
    word_hashes = minhash._word_hashes

    def spy(texts):
        seen.append(sum(map(len, texts)))
        return word_hashes(texts)

    giant = doc(3, 400)  # ~2,400 characters
    expected = signatures([giant], CFG)
    monkeypatch.setattr(minhash, "_word_hashes", spy)
    minhash._chunk_powers.cache_clear()
    try:
        assert (signatures([giant], CFG) == expected).all()
    finally:
        minhash._chunk_powers.cache_clear()
    assert len(seen) >= 8 and max(seen) <= 300 + 10


def test_deterministic_across_processes():
    """Workers compute signatures in parallel: another process, another hash seed, same bits."""
    code = (
        "import hashlib, sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from tunesmith.config import NearDedupConfig\n"
        "from tunesmith.data.minhash import signatures\n"
        "from test_minhash import doc\n"
        "print(hashlib.sha256(signatures([doc(k) for k in range(20)] + ['', 'x'], "
        "NearDedupConfig()).tobytes()).hexdigest())\n"
    )
    here = hashlib.sha256(signatures([doc(k) for k in range(20)] + ["", "x"], CFG).tobytes()).hexdigest()
    for hash_seed in ("1", "987"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here


def test_seed_changes_permutations():
    a = signatures([doc(1)], CFG)
    b = signatures([doc(1)], NearDedupConfig(seed=2))
    assert (a != b).mean() > 0.9


def test_short_and_empty_texts():
    texts = ["", "   ", "hi", "Hi!", "ho", "three little words", "Three little WORDS.", "?!", "!?"]
    sigs = signatures(texts, CFG)
    same = lambda i, j: bool((sigs[i] == sigs[j]).all())  # noqa: E731
    assert same(0, 1)  # empty and whitespace-only: the same (empty) text
    assert same(2, 3) and not same(2, 4)  # one word: the word is the shingle
    assert same(5, 6)  # fewer words than ngram: all words are one shingle
    assert not same(5, 2)
    assert not same(7, 8) and not same(0, 7)  # no words: the text itself


def test_non_str_input_names_the_item():
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        signatures(["ok", None], CFG)  # type: ignore[list-item]


def test_empty_input():
    assert signatures([], CFG).shape == (0, 128)
    index = NearDuplicateIndex(CFG)
    index.add(signatures([], CFG))
    assert len(index.clusters()) == 0 and len(index.similar_pairs()) == 0


# --------------------------------------------------------------------------- clusters
def test_near_copy_clusters_and_unrelated_do_not():
    base = doc(7)
    near = edit(base, n_edits=1, seed=1)  # ~0.9 Jaccard
    far = edit(base, n_edits=8, seed=2)  # ~0.4 Jaccard
    assert jaccard(base, near) > 0.85 and jaccard(base, far) < 0.6
    reps = cluster([doc(1), base, doc(2), near, far, base])
    assert reps.tolist() == [0, 1, 2, 1, 4, 1]


def test_representative_is_smallest_index_across_adds():
    a, b = doc(11), doc(12)
    index = NearDuplicateIndex(CFG)
    index.add(signatures([doc(13), b], CFG))
    index.add(signatures([a, edit(b, 1, 3)], CFG))
    assert index.clusters().tolist() == [0, 1, 2, 1]
    index.add(signatures([edit(a, 1, 4), b], CFG))  # a later add invalidates the result
    assert index.clusters().tolist() == [0, 1, 2, 1, 2, 1]
    assert len(index) == 6


def test_similar_pairs_are_verified_and_ordered():
    base = doc(21)
    index = NearDuplicateIndex(CFG)
    index.add(signatures([base, edit(base, 1, 1), doc(22), base, base], CFG))
    pairs = index.similar_pairs()
    assert pairs.dtype.names == ("i", "j", "jaccard")
    # Every pair of a small bucket is checked, not only pairs with its first member.
    assert [(int(p["i"]), int(p["j"])) for p in pairs] == [(0, 1), (0, 3), (0, 4), (1, 3), (1, 4), (3, 4)]
    assert (pairs["jaccard"] >= CFG.threshold).all() and pairs["jaccard"][1] == 1.0


def test_bands_and_rows_decide_candidates_threshold_decides_verification():
    a = doc(31)
    b = edit(a, n_edits=3, seed=5)  # Jaccard ~0.7
    j = jaccard(a, b)
    assert 0.6 < j < 0.8
    one_row = NearDedupConfig(bands=128, rows=1, threshold=0.5)  # every value is a band
    one_band = NearDedupConfig(bands=1, rows=128, threshold=0.5)  # all 128 values must match
    assert cluster([a, b], one_row).tolist() == [0, 0]
    assert cluster([a, b], one_band).tolist() == [0, 1]
    # A candidate (it shares single-value bands) that verification rejects.
    strict = NearDedupConfig(bands=128, rows=1, threshold=0.9)
    assert cluster([a, b], strict).tolist() == [0, 1]


def test_other_signature_sizes():
    cfg = NearDedupConfig(num_perm=64, bands=16, rows=4, ngram=3)
    base = doc(41)
    sigs = signatures([base, edit(base, 1, 1), doc(42)], cfg)
    assert sigs.shape == (3, 64)
    assert cluster([base, edit(base, 1, 1), doc(42)], cfg).tolist() == [0, 0, 2]


def test_large_bucket_of_copies_is_one_cluster():
    # More copies than the all-pairs cap: pairs are built to the bucket's first member.
    base = doc(51)
    texts = [doc(52)] + [base] * 150 + [edit(base, 1, k) for k in range(5)]
    reps = cluster(texts)
    assert reps[0] == 0 and (reps[1:] == 1).all()


def test_bucket_pairs_all_pairs_small_star_and_chain_large():
    cap = minhash._MAX_BUCKET_ALL_PAIRS
    big = cap + 6
    # Keys: a small bucket {0, 2, 5}, a large bucket of the other ids >= 6, singletons.
    col = np.arange(big + 6, dtype=np.uint64) + 1000
    col[[0, 2, 5]] = 7
    col[6:] = 9
    i, j = minhash._bucket_pairs(col)
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    members = list(range(6, big + 6))
    star = {(6, m) for m in members[1:]}
    chain = set(itertools.pairwise(members))
    assert got == {(0, 2), (0, 5), (2, 5)} | star | chain


def test_add_rejects_wrong_signatures():
    index = NearDuplicateIndex(CFG)
    with pytest.raises(ValueError, match=r"shape \(n, 128\)"):
        index.add(np.zeros((2, 64), dtype=np.uint32))
    with pytest.raises(TypeError, match="uint32"):
        index.add(np.zeros((2, 128), dtype=np.int64))


def reference_components(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        parent[max(ri, rj)] = min(ri, rj)
    return [find(x) for x in range(n)]


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=80))))
def test_components_match_reference_union_find(case):
    n, edges = case
    edges = [(min(a, b), max(a, b)) for a, b in edges if a != b]
    i = np.array([e[0] for e in edges], dtype=np.int64)
    j = np.array([e[1] for e in edges], dtype=np.int64)
    assert minhash._components(n, i, j).tolist() == reference_components(n, edges)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4)), min_size=1, max_size=25))
def test_clusters_are_consistent(spec):
    """Docs are (template, edits) pairs; whatever clusters come out must be well formed."""
    texts = [edit(doc(900 + t), e, seed=e) if e else doc(900 + t) for t, e in spec]
    index = NearDuplicateIndex(CFG)
    index.add(signatures(texts, CFG))
    reps = index.clusters()
    idx = np.arange(len(texts))
    assert (reps <= idx).all()
    assert (reps[reps] == reps).all()  # idempotent: a representative represents itself
    pairs = index.similar_pairs()
    assert (pairs["i"] < pairs["j"]).all()
    assert (reps[pairs["i"]] == reps[pairs["j"]]).all()
    edges = list(zip(pairs["i"].tolist(), pairs["j"].tolist(), strict=True))
    assert reps.tolist() == reference_components(len(texts), edges)
    for a, b in zip(spec, idx, strict=True):  # identical specs are identical texts
        if a[1] == 0:
            first = spec.index(a)
            assert reps[b] == reps[first]
