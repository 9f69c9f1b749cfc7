"""Confidence that means something: temperature scaling, calibration error, risk-coverage, and
the confidence threshold that keeps the error among auto-approved answers under a target.

Everything here works on plain arrays, so it is tested on generated data and used the same way
on a model's validation answers:

- ``logits``: ``[n, K]`` per answer (one label field), the model's log-likelihood of each
  allowed value (``-inf`` pads fields with fewer than ``K`` values). Their softmax is the
  probability of each value *normalised over the allowed values*.
- ``chosen``: ``[n]`` index of the value the model answered; ``reference``: ``[n]`` index of
  the right value.
- ``confidence``: ``[n]`` in ``[0, 1]``; ``correct``: ``[n]`` booleans.

The threshold method (:func:`fit_threshold`) is *Learn then Test* (Angelopoulos, Bates, Candès,
Jordan and Lei, 2021) with a one-sided exact binomial (Clopper–Pearson) test per candidate
threshold and *fixed-sequence testing* over a grid of candidates fixed in advance, from the
strictest down: each is tested at level ``delta`` and the walk stops at the first that fails.
With probability at least ``1 - delta`` over the draw of the calibration answers, every
certified threshold (in particular the chosen one) has a true error rate among the answers it
auto-approves at most the target. It is a finite-sample guarantee; nothing asymptotic. Fixed
sequence spends no Bonferroni split (a ``delta / 30`` test needs ~2.5x the answers to certify
the same threshold: 111 error-free ones instead of 45 for a 5% target), which is what lets a
few hundred validation answers certify a useful threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tunesmith import deps
from tunesmith.errors import TunesmithError

ECE_BINS = 15
MIN_T, MAX_T = 0.05, 20.0  # temperatures outside this range mean the inputs are broken


# ----------------------------------------------------------------------------- probabilities
def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``; ``-inf`` entries get probability 0."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - np.max(z, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = np.max(z, axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def pad_logits(rows: list[list[float]]) -> np.ndarray:
    """Ragged per-answer log-likelihoods (fields with different numbers of allowed values) as
    one ``[n, K]`` array padded with ``-inf``."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), -np.inf)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def nll(logits: np.ndarray, reference: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the reference values at ``temperature``."""
    lp = log_softmax(logits, temperature)
    return float(-lp[np.arange(len(reference)), reference].mean())


def fit_temperature(logits: np.ndarray, reference: np.ndarray) -> float:
    """The temperature ``T`` minimising the validation NLL of ``softmax(logits / T)`` (Guo et
    al., 2017). One scalar: it changes confidences, never which value is likeliest, so accuracy
    stays the same. Optimised over ``log T`` (bounded, scipy's Brent method).

    Raises:
        TunesmithError: no answers, or a reference index outside its row's allowed values.
    """
    deps.require(deps.SCIPY_CALIBRATION)
    from scipy.optimize import minimize_scalar

    logits, reference = np.asarray(logits, dtype=np.float64), np.asarray(reference, dtype=np.int64)
    if len(reference) == 0:
        raise TunesmithError("temperature scaling needs at least one validation answer with a reference")
    if reference.min() < 0 or reference.max() >= logits.shape[1] or not np.all(
            np.isfinite(logits[np.arange(len(reference)), reference])):
        raise TunesmithError("temperature scaling: a reference value is not among its field's allowed values")
    result = minimize_scalar(lambda log_t: nll(logits, reference, float(np.exp(log_t))),
                             bounds=(np.log(MIN_T), np.log(MAX_T)), method="bounded",
                             options={"xatol": 1e-4})
    return float(np.exp(result.x))


def chosen_confidence(logits: np.ndarray, chosen: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The probability of the answered value, normalised over the allowed values."""
    p = softmax(logits, temperature)
    return p[np.arange(len(chosen)), np.asarray(chosen, dtype=np.int64)]


def field_confidences(value_logliks: Mapping[str, Mapping[str, float]], chosen: Mapping[str, str | None],
                      temperatures: Mapping[str, float] | None = None) -> tuple[dict[str, float | None], float | None]:
    """One answer's calibrated confidence per field and overall (its lowest field's).

    Args:
        value_logliks: per field, the model's log-likelihood of each allowed value (the sum of
            its tokens' log-probabilities in the answer's context).
        chosen: the value the answer gave per field (None: missing or not allowed).
        temperatures: per field, fitted on validation (missing: 1, i.e. uncalibrated).

    A field whose value is missing or outside the allowed values has confidence 0: nobody
    should trust it without a look.
    """
    temperatures = temperatures or {}
    out: dict[str, float | None] = {}
    for name, lls in value_logliks.items():
        values = list(lls)
        value = chosen.get(name)
        if value not in lls:
            out[name] = 0.0
            continue
        logits = np.array([[lls[v] for v in values]], dtype=np.float64)
        out[name] = float(softmax(logits, temperatures.get(name, 1.0))[0, values.index(value)])
    known = [c for c in out.values() if c is not None]
    return out, (min(known) if known else None)


# ----------------------------------------------------------------------------- calibration error
@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: answers whose confidence is in ``(low, high]``."""

    low: float
    high: float
    count: int
    confidence: float | None  # mean confidence of the bin's answers (None: empty bin)
    accuracy: float | None  # share of them that were right


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    # (k/bins, (k+1)/bins]; a confidence of exactly 0 goes to the first bin
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """Equal-width bins over ``[0, 1]``: count, mean confidence and accuracy per bin (the data
    of a reliability diagram)."""
    confidence, correct = _checked(confidence, correct)
    idx = _bin_index(confidence, bins)
    out = []
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        out.append(ReliabilityBin(b / bins, (b + 1) / bins, n,
                                  float(confidence[mask].mean()) if n else None,
                                  float(correct[mask].mean()) if n else None))
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over equal-width bins."""
    confidence, correct = _checked(confidence, correct)
    if len(confidence) == 0:
        raise TunesmithError("the calibration error needs at least one answer")
    return float(sum(b.count * abs(b.accuracy - b.confidence)  # type: ignore[operator]
                     for b in reliability(confidence, correct, bins) if b.count) / len(confidence))


def _checked(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(f"confidence {confidence.shape} and correct {correct.shape} must be equal-length vectors")
    if len(confidence) and (np.nanmin(confidence) < 0 or np.nanmax(confidence) > 1 or np.isnan(confidence).any()):
        raise ValueError("confidences must lie in [0, 1]")
    return confidence, correct


# ----------------------------------------------------------------------------- risk-coverage
@dataclass(frozen=True)
class RiskCoverage:
    """Keeping the answers with confidence ``>= threshold[i]``: the share kept (``coverage``)
    and the error rate among them (``risk``), thresholds from the highest confidence down."""

    threshold: np.ndarray
    coverage: np.ndarray
    risk: np.ndarray

    def area(self) -> float:
        """Area under the risk-coverage curve (AURC; lower is better), by the trapezoid rule."""
        return float(np.trapezoid(self.risk, self.coverage)) if len(self.risk) > 1 else float(self.risk.sum())


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """The risk-coverage curve at every distinct confidence (ties enter together)."""
    confidence, correct = _checked(confidence, correct)
    order = np.argsort(-confidence, kind="stable")
    conf, err = confidence[order], (~correct[order]).astype(np.float64)
    kept = np.arange(1, len(conf) + 1)
    errors = np.cumsum(err)
    last_of_tie = np.r_[conf[1:] != conf[:-1], True] if len(conf) else np.array([], dtype=bool)
    n = max(len(conf), 1)
    return RiskCoverage(conf[last_of_tie], kept[last_of_tie] / n, errors[last_of_tie] / kept[last_of_tie])


# ----------------------------------------------------------------------------- the threshold
def threshold_grid() -> np.ndarray:
    """The fixed candidate thresholds, chosen before seeing any data (the testing sequence walks
    them from the top): steps of 0.05 up to 0.85, of 0.01 from 0.9 to 0.99, then 0.995 and 0.999."""
    return np.round(np.r_[np.arange(0, 0.9, 0.05), np.arange(0.9, 0.995, 0.01), 0.995, 0.999], 4)


@dataclass(frozen=True)
class Threshold:
    """The fitted auto-approval threshold and what it achieved on the calibration answers.

    ``threshold`` is None when no candidate could be certified (too few answers, or the model
    errs too often even on its most confident answers): then nothing is auto-approved.
    """

    threshold: float | None
    target_error: float
    delta: float
    method: str
    n: int  # calibration answers
    coverage: float  # share of them auto-approved at the threshold
    error: float | None  # their observed error rate among the auto-approved
    upper_bound: float | None  # the (1 - delta) Clopper–Pearson upper bound on that error rate

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {"threshold": self.threshold, "target_error": self.target_error, "delta": self.delta,
                "method": self.method, "n": self.n, "coverage": self.coverage, "error": self.error,
                "upper_bound": self.upper_bound}


METHOD = "learn-then-test: Clopper-Pearson upper bound, fixed-sequence testing down a fixed grid"


def binomial_upper_bound(errors: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper–Pearson upper confidence bound on an error rate."""
    deps.require(deps.SCIPY_CALIBRATION)
    from scipy.stats import beta

    if n == 0:
        return 1.0
    if errors >= n:
        return 1.0
    return float(beta.ppf(1 - alpha, errors + 1, n - errors))


def fit_threshold(confidence: np.ndarray, correct: np.ndarray, *, target_error: float, delta: float = 0.1,
                  grid: np.ndarray | None = None) -> Threshold:
    """The lowest confidence threshold whose auto-approved answers have an error rate at most
    ``target_error``, certified with probability ``1 - delta`` (see the module docstring).

    For each candidate ``t`` of a fixed grid, the answers with confidence ``>= t`` are kept;
    the calibration answers being exchangeable draws, conditional on *how many* are kept, the
    kept ones are independent draws given ``confidence >= t`` and their errors are
    Binomial(kept, ``r(t)``), ``r(t)`` the selective error rate, so the exact binomial test of
    ``r(t) > target`` is valid.
    The candidates are tested in a fixed order, strictest first, each at level ``delta``, and
    the walk stops at the first one not certified (fixed-sequence testing controls the chance
    of certifying any wrong ``t`` at ``delta`` without splitting it). A candidate that keeps
    fewer answers than an error-free record needs to be certified (45 for a 5% target at
    delta 0.1) is skipped, not failed: it could not pass, and whether it is tested depends on
    the confidences only, never on the errors, so the order stays fixed given the confidences.
    The last certified one (the most coverage) is chosen.
    """
    confidence, correct = _checked(confidence, correct)
    if not 0 < target_error < 1 or not 0 < delta < 1:
        raise TunesmithError(f"review.target_error ({target_error}) and review.delta ({delta}) must lie in (0, 1)")
    grid = threshold_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    n = len(confidence)
    # answers a candidate must keep for an error-free record to certify it: (1 - target)^k <= delta
    fewest = max(1, int(np.ceil(np.log(delta) / np.log1p(-target_error) - 1e-9)))
    best: tuple[float, float, float, float] | None = None
    for t in sorted(grid, reverse=True):
        kept = confidence >= t
        k = int(kept.sum())
        if k < fewest:  # could not be certified even without an error: not a test
            continue
        errors = int((~correct[kept]).sum())
        bound = binomial_upper_bound(errors, k, delta)
        if bound > target_error:
            break
        best = (float(t), k / n, errors / k, bound)
    if best is None:
        return Threshold(None, target_error, delta, METHOD, n, 0.0, None, None)
    return Threshold(best[0], target_error, delta, METHOD, n, best[1], best[2], best[3])


@dataclass(frozen=True)
class Calibration:
    """What a version stores: a temperature per label field, the auto-approval threshold over
    the answer's confidence (its lowest field's), and the ECE before and after scaling."""

    temperatures: dict[str, float]
    threshold: Threshold
    ece_before: float | None = None
    ece_after: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"temperatures": self.temperatures, "threshold": self.threshold.to_dict(),
                "ece_before": self.ece_before, "ece_after": self.ece_after}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        t = dict(data["threshold"])
        return cls(dict(data["temperatures"]), Threshold(**t), data.get("ece_before"), data.get("ece_after"))


@dataclass(frozen=True)
class FieldScores:
    """One label field's validation answers: the log-likelihood of every allowed value
    (``logits`` ``[n, K]``, ``-inf`` padded), the answered and the right value's index."""

    logits: np.ndarray
    chosen: np.ndarray
    reference: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.logits) == len(self.chosen) == len(self.reference)):
            raise ValueError("logits, chosen and reference need one row per answer")


def fit_calibration(fields: dict[str, FieldScores], *, target_error: float, delta: float = 0.1) -> Calibration:
    """Temperatures per field and the auto-approval threshold, from validation answers.

    The answers are split in two disjoint halves (even and odd positions): the temperatures are
    fitted on the first, the threshold on the second, so the threshold's guarantee is not
    spent on data the temperatures have already seen. An answer's confidence is its lowest
    field's calibrated confidence; it is right when every field is. The ECE before and after
    scaling is measured on the second half (fields pooled).
    """
    sizes = {len(f.chosen) for f in fields.values()}
    if len(sizes) != 1:
        raise TunesmithError(f"every label field needs the same answers; got sizes {sorted(sizes)}")
    n = sizes.pop()
    if n < 4:
        raise TunesmithError(f"calibration needs at least 4 validation answers, got {n}")
    fit, hold = np.arange(0, n, 2), np.arange(1, n, 2)
    temps = {name: fit_temperature(f.logits[fit], f.reference[fit]) for name, f in fields.items()}
    raw, scaled, right = [], [], []
    for name, f in fields.items():
        raw.append(chosen_confidence(f.logits[hold], f.chosen[hold]))
        scaled.append(chosen_confidence(f.logits[hold], f.chosen[hold], temps[name]))
        right.append(f.chosen[hold] == f.reference[hold])
    threshold = fit_threshold(np.min(scaled, axis=0), np.all(right, axis=0), target_error=target_error, delta=delta)
    correct = np.concatenate(right)
    return Calibration(temps, threshold, expected_calibration_error(np.concatenate(raw), correct),
                       expected_calibration_error(np.concatenate(scaled), correct))
