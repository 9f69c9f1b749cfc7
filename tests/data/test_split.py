from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.config import SplitConfig
from tunesmith.data.split import assign_splits, ngram_hashes, overlap_fractions


def test_ratios_respected_for_singleton_groups():
    groups = [f"g{i}" for i in range(10_000)]
    split = assign_splits(groups, SplitConfig(), seed=1)
    shares = np.bincount(split, minlength=3) / len(groups)
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.002)


def test_deterministic_and_seed_dependent():
    groups = [f"g{i % 300}" for i in range(3000)]
    a = assign_splits(groups, SplitConfig(), seed=1)
    assert (a == assign_splits(groups, SplitConfig(), seed=1)).all()
    assert (a != assign_splits(groups, SplitConfig(), seed=2)).any()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=400),
    st.integers(min_value=0, max_value=2**32),
    st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.5, 0.0), (0.34, 0.33, 0.33), (1.0, 0.0, 0.0)]),
)
def test_groups_never_cross_splits(group_ids, seed, ratios):
    """Property: every member of a group lands in the same split; empty ratios get nothing."""
    cfg = SplitConfig(train=ratios[0], validation=ratios[1], test=ratios[2])
    groups = [f"customer-{g}" for g in group_ids]
    split = assign_splits(groups, cfg, seed=seed)
    seen = defaultdict(set)
    for g, s in zip(groups, split, strict=True):
        seen[g].add(int(s))
    assert all(len(s) == 1 for s in seen.values())
    for idx, ratio in enumerate(ratios):
        if ratio == 0:
            assert idx not in set(split.tolist())


def test_large_groups_keep_shares_close():
    groups = [f"c{i // 7}" for i in range(7000)]  # 1000 customers with 7 tickets each
    shares = np.bincount(assign_splits(groups, SplitConfig(), seed=3), minlength=3) / 7000
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.01)


def test_contamination_overlap():
    train, same, other = ngram_hashes([
        "the quick brown fox jumps over the lazy dog near the river bank",
        "The quick brown fox jumps over the lazy dog near the river bank!",
        "completely unrelated words about invoices and refunds for march",
    ], 3)
    fr = overlap_fractions([same, other, np.zeros(0, dtype=np.uint64)], train)
    assert fr[0] == 1.0 and fr[1] == 0.0 and fr[2] == 0.0


def test_short_text_is_one_ngram():
    assert [len(h) for h in ngram_hashes(["two words", ""], 8)] == [1, 1]


def test_overlap_is_partial_for_partly_copied_text():
    a, b = ngram_hashes(["one two three four five six", "one two three four nine ten"], 2)
    assert overlap_fractions([b], a)[0] == 3 / 5
