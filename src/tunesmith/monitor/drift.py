"""Two-sample drift tests: is the current window drawn from the reference's distribution?

Every test returns a :class:`Finding` with a p-value *and* an effect size, and alarms only when
both say so (``p < alpha`` and effect >= its minimum): with thousands of requests a test
finds differences too small to matter, and a large effect in ten requests is noise.

Input drift
- length: two-sample Kolmogorov-Smirnov on characters per prompt (effect: KS D).
- unseen tokens: the share of a prompt's words that the reference never used. The reference's
  own share must be measured on texts that did not build the vocabulary, so the reference is
  split: a vocabulary part and a held-out part the size of the window; under no drift the
  held-out part and the window are exchangeable. One-sided Mann-Whitney U on the per-prompt
  shares (effect: the rise of the pooled share, in points).
- embeddings: MMD with an RBF kernel (bandwidth: median pairwise distance of the pooled
  sample) and a *pooled* permutation null: the reference/current labels are shuffled over the
  union, so the null compares two samples neither of which is the reference (Gretton et al.,
  JMLR 2012). Resampling the null from the reference alone compares the reference with a
  bootstrap of itself, which is closer to it than any new sample can be, so the test alarms on
  undrifted traffic (measured: benchmarks/bench_drift.py). The effect is the ROC AUC of a
  domain classifier (logistic regression, cross-validated, out-of-fold scores): 0.5 when
  windows cannot be told apart; "a classifier tells traffic from the reference with AUC 0.71"
  reads better than an MMD value. ``classifier_test`` gives that AUC its own pooled
  permutation p-value (costlier: one cross-validated fit per permutation).

Output drift
- labels per field: chi-squared test of homogeneity on the 2 x K table (effect:
  Jensen-Shannon distance, base 2, in [0, 1]).
- confidence: KS on the answers' confidences (effect: KS D).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_WORD = re.compile(r"[^\W\d_]+")  # letters only: ids, numbers and dates say nothing about drift


@dataclass(frozen=True, slots=True)
class Finding:
    """One test's verdict.

    Args:
        check: what was compared (``input.length``, ``output.label.category``...).
        test: the statistical test (``ks``, ``mann-whitney``, ``mmd-permutation``...).
        statistic: the test statistic.
        p_value: its p-value (None when the test could not run; ``note`` says why).
        effect: the effect-size name and value the alarm also requires.
        alpha: the significance level it was judged at (after the Bonferroni split).
        alarm: ``p_value < alpha`` and ``effect >= min_effect``.
    """

    check: str
    test: str
    statistic: float | None
    p_value: float | None
    effect_name: str
    effect: float | None
    min_effect: float
    alpha: float
    alarm: bool
    n_reference: int
    n_current: int
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _finding(check: str, test: str, statistic: float | None, p: float | None, effect_name: str,
             effect: float | None, min_effect: float, alpha: float, n_ref: int, n_cur: int,
             note: str = "", detail: dict[str, Any] | None = None) -> Finding:
    alarm = p is not None and effect is not None and p < alpha and effect >= min_effect
    return Finding(check, test, None if statistic is None else float(statistic), None if p is None else float(p),
                   effect_name, None if effect is None else float(effect), min_effect, alpha, bool(alarm),
                   n_ref, n_cur, note, detail or {})


def skipped(check: str, test: str, why: str, alpha: float, n_ref: int = 0, n_cur: int = 0) -> Finding:
    """A check that could not run (no confidences logged, a field never answered...)."""
    return Finding(check, test, None, None, "", None, 0.0, alpha, False, n_ref, n_cur, why)


# --------------------------------------------------------------------------- text statistics
def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def length_test(reference: Sequence[str], current: Sequence[str], *, alpha: float, min_d: float) -> Finding:
    """KS on characters per text."""
    from scipy.stats import ks_2samp

    ref = np.array([len(t) for t in reference], dtype=float)
    cur = np.array([len(t) for t in current], dtype=float)
    res = ks_2samp(ref, cur)
    detail = {"reference_median": float(np.median(ref)), "current_median": float(np.median(cur)),
              "reference_lengths": ref.tolist(), "current_lengths": cur.tolist()}
    return _finding("input.length", "ks", res.statistic, res.pvalue, "ks_d", res.statistic, min_d, alpha,
                    len(ref), len(cur), detail=detail)


def unseen_test(reference: Sequence[str], current: Sequence[str], *, alpha: float, min_rise: float,
                seed: int = 0) -> Finding:
    """Share of words the reference never used: window vs a held-out part of the reference."""
    from scipy.stats import mannwhitneyu

    order = np.random.default_rng(seed).permutation(len(reference))
    held = min(len(reference) // 3, len(current))
    if held < 5:
        return skipped("input.unseen_tokens", "mann-whitney", f"reference too small ({len(reference)} texts) "
                       "to hold a part out of its vocabulary", alpha, len(reference), len(current))
    vocab = {w for i in order[held:] for w in words(reference[i])}
    ref_counts = [_unseen(words(reference[i]), vocab) for i in order[:held]]
    cur_counts = [_unseen(words(t), vocab) for t in current]
    ref_share = [u / n for u, n in ref_counts if n]
    cur_share = [u / n for u, n in cur_counts if n]
    if len(ref_share) < 5 or len(cur_share) < 5:
        return skipped("input.unseen_tokens", "mann-whitney", "too few texts with words", alpha,
                       len(ref_share), len(cur_share))
    res = mannwhitneyu(cur_share, ref_share, alternative="greater")
    pooled_ref = sum(u for u, _ in ref_counts) / max(1, sum(n for _, n in ref_counts))
    pooled_cur = sum(u for u, _ in cur_counts) / max(1, sum(n for _, n in cur_counts))
    new_words = Counter(w for t in current for w in words(t) if w not in vocab)
    detail = {"reference_share": pooled_ref, "current_share": pooled_cur, "vocabulary": len(vocab),
              "top_unseen": new_words.most_common(15)}
    return _finding("input.unseen_tokens", "mann-whitney", res.statistic, res.pvalue, "share_rise",
                    pooled_cur - pooled_ref, min_rise, alpha, len(ref_share), len(cur_share), detail=detail)


def _unseen(tokens: list[str], vocab: set[str]) -> tuple[int, int]:
    return sum(t not in vocab for t in tokens), len(tokens)


# --------------------------------------------------------------------------- embeddings
def rbf_kernel(pooled: np.ndarray) -> np.ndarray:
    """``exp(-d^2 / (2 s^2))`` with ``s`` the median pairwise distance of the pooled sample
    (computed on the pooled sample, so every permutation sees the same kernel)."""
    x = np.asarray(pooled, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    upper = d2[np.triu_indices_from(d2, k=1)]
    s2 = float(np.median(upper)) if upper.size else 1.0
    return np.exp(-d2 / (2.0 * (s2 if s2 > 0 else 1.0)))


def mmd2(kernel: np.ndarray, is_current: np.ndarray) -> float:
    """Biased MMD^2 of the split ``is_current`` of the pooled kernel matrix."""
    return float(_mmd2_many(kernel, is_current[:, None])[0])


def _mmd2_many(kernel: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """MMD^2 for each column of the boolean ``[N, B]`` matrix ``masks`` (True = current): with
    ``a = mask / n - (1 - mask) / m`` it is ``a' K a``, B of them in one matrix product."""
    masks = masks.astype(np.float64)
    n = masks.sum(0)
    a = masks / n - (1.0 - masks) / (masks.shape[0] - n)
    return np.einsum("ib,ib->b", a, kernel @ a)


def mmd_test(reference: np.ndarray, current: np.ndarray, *, permutations: int = 2000, seed: int = 0,
             batch: int = 250) -> tuple[float, float, np.ndarray]:
    """(MMD^2, p-value, null statistics) with the null from permutations of the pooled sample.

    p = (1 + #{null >= observed}) / (1 + permutations): exact level under exchangeability.
    """
    pooled = np.vstack([reference, current])
    kernel = rbf_kernel(pooled)
    labels = np.r_[np.zeros(len(reference), bool), np.ones(len(current), bool)]
    observed = mmd2(kernel, labels)
    rng = np.random.default_rng(seed)
    null = np.empty(permutations)
    for start in range(0, permutations, batch):
        size = min(batch, permutations - start)
        masks = np.stack([rng.permutation(labels) for _ in range(size)], axis=1)
        null[start:start + size] = _mmd2_many(kernel, masks)
    p = (1.0 + np.sum(null >= observed - 1e-12)) / (1.0 + permutations)
    return observed, float(p), null


def domain_auc(reference: np.ndarray, current: np.ndarray, *, folds: int = 5, seed: int = 0,
               labels: np.ndarray | None = None) -> float:
    """Cross-validated ROC AUC of logistic regression telling current (1) from reference (0);
    every text is scored by a model that never saw it (out-of-fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([reference, current])
    y = labels if labels is not None else np.r_[np.zeros(len(reference)), np.ones(len(current))]
    folds = max(2, min(folds, int(min(np.sum(y == 0), np.sum(y == 1)))))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(C=1.0, solver="liblinear"), x, y, cv=cv,
                               method="decision_function")
    return float(roc_auc_score(y, scores))


def classifier_test(reference: np.ndarray, current: np.ndarray, *, permutations: int = 100, folds: int = 5,
                    seed: int = 0) -> tuple[float, float, np.ndarray]:
    """(AUC, p-value, null AUCs): the domain-classifier test with labels permuted over the
    pooled sample (each permutation refits the cross-validated classifier)."""
    observed = domain_auc(reference, current, folds=folds, seed=seed)
    labels = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    rng = np.random.default_rng(seed)
    null = np.array([domain_auc(reference, current, folds=folds, seed=seed, labels=rng.permutation(labels))
                     for _ in range(permutations)])
    p = (1.0 + np.sum(null >= observed)) / (1.0 + permutations)
    return observed, float(p), null


def embedding_test(reference: np.ndarray, current: np.ndarray, *, alpha: float, min_auc: float,
                   permutations: int = 2000, classifier_permutations: int = 0, seed: int = 0,
                   embedder: str = "") -> Finding:
    """MMD (pooled permutations) decides significance; the domain classifier's AUC is the
    effect. With ``classifier_permutations > 0`` the classifier's own permutation test decides
    instead (the MMD is still reported)."""
    stat, p, _ = mmd_test(reference, current, permutations=permutations, seed=seed)
    detail: dict[str, Any] = {"embedder": embedder, "mmd2": stat, "mmd_p": p, "permutations": permutations}
    test = "mmd-permutation"
    if classifier_permutations > 0:
        auc, p, _ = classifier_test(reference, current, permutations=classifier_permutations, seed=seed)
        detail |= {"classifier_p": p, "classifier_permutations": classifier_permutations}
        test = "classifier-permutation"
    else:
        auc = domain_auc(reference, current, seed=seed)
    detail["auc"] = auc
    return _finding("input.embedding", test, stat, p, "auc", auc, min_auc, alpha, len(reference), len(current),
                    detail=detail)


# --------------------------------------------------------------------------- outputs
def label_test(field_name: str, reference: Sequence[str], current: Sequence[str], *, alpha: float,
               min_js: float) -> Finding:
    """Chi-squared test of homogeneity of one field's values (effect: Jensen-Shannon distance)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    check = f"output.label.{field_name}"
    values = sorted(set(reference) | set(current))
    ref_c, cur_c = Counter(reference), Counter(current)
    table = np.array([[ref_c[v] for v in values], [cur_c[v] for v in values]], dtype=float)
    detail = {"values": values, "reference": table[0].astype(int).tolist(), "current": table[1].astype(int).tolist()}
    if not len(reference) or not len(current):
        return skipped(check, "chi2", "no answers on one side", alpha, len(reference), len(current))
    js = float(jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2))
    if len(values) < 2:
        return _finding(check, "chi2", 0.0, 1.0, "js_distance", js, min_js, alpha, len(reference), len(current),
                        note="one value only", detail=detail)
    chi2, p, _, _ = chi2_contingency(table)
    return _finding(check, "chi2", chi2, p, "js_distance", js, min_js, alpha, len(reference), len(current),
                    detail=detail)


def confidence_test(reference: Sequence[float], current: Sequence[float], *, alpha: float, min_d: float) -> Finding:
    from scipy.stats import ks_2samp

    ref, cur = np.asarray(reference, float), np.asarray(current, float)
    res = ks_2samp(ref, cur)
    detail = {"reference_mean": float(ref.mean()), "current_mean": float(cur.mean()),
              "reference": ref.tolist(), "current": cur.tolist()}
    return _finding("output.confidence", "ks", res.statistic, res.pvalue, "ks_d", res.statistic, min_d, alpha,
                    len(ref), len(cur), detail=detail)
