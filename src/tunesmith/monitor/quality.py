"""Quality over reviewed answers: the error rate with a Wilson interval, and a Bernoulli CUSUM
that raises an alarm when the rate has risen.

Why a CUSUM and not a window test: a reviewed answer arrives one at a time, a team wants to
hear about a rise as soon as the evidence is there, and re-testing a sliding window after every
answer inflates false alarms without bound. The log-likelihood-ratio CUSUM (Page, 1954) is the
optimal detector of a step from ``p0`` to ``p1`` (Moustakides, 1986): after each reviewed answer
``x`` (1 = the reviewer found an error)::

    S = max(0, S + x * ln(p1 / p0) + (1 - x) * ln((1 - p1) / (1 - p0)))

and an alarm when ``S >= h`` (then ``S`` restarts at 0). ``h`` is not a magic number: it is
chosen for a stated in-control average run length (ARL0, answers between false alarms at
``p0``), computed with the Markov-chain method of Brook & Evans (1972) on a fine grid of ``S``
(:func:`cusum_run_length`). The same chain gives the probability of an alarm within ``n``
answers at any true rate, which is how the defaults were chosen (docs/monitoring.md):

    p0 = 0.05, p1 = 0.10, ARL0 = 50,000  ->  h = 6.40
    at 5% : P(a false alarm within 10,000 answers) = 0.17, so P(two or more) ~ 0.03
    at 12%: mean delay 173 answers from S = 0, P(alarm within 300) = 0.92

A step from 5% to 12% carries 0.038 nats of evidence per answer; no detector that keeps two
false alarms per 10,000 this rare can be sure of it within 300 answers (the chart is within
a few points of that limit), so the acceptance tests count seeds rather than pin one.

river's ADWIN/DDM were not used: neither states its false-alarm rate for a Bernoulli stream at
a given base rate, and ADWIN's delta is not an ARL; forty lines of numpy give a stated design.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Grid cells of [0, h) in the Brook-Evans chain: ARLs agree with a 200,000-run simulation to
# within 2% (tests/monitor/test_quality.py checks a smaller case).
_GRID = 2000


@dataclass(frozen=True, slots=True)
class Rate:
    """A proportion with its 95% Wilson score interval (good at small n and rates near 0)."""

    errors: int
    n: int
    rate: float | None
    low: float | None
    high: float | None


def error_rate(errors: int, n: int, *, confidence: float = 0.95) -> Rate:
    """``errors / n`` with its Wilson interval (scipy's ``binomtest(...).proportion_ci``)."""
    if n < 0 or not 0 <= errors <= max(n, 0):
        raise ValueError(f"need 0 <= errors <= n, got errors={errors}, n={n}")
    if n == 0:
        return Rate(0, 0, None, None, None)
    from scipy.stats import binomtest

    ci = binomtest(errors, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(errors, n, errors / n, float(ci.low), float(ci.high))


@dataclass(frozen=True, slots=True)
class CusumDesign:
    """A Bernoulli CUSUM tuned to detect a step from ``p0`` (acceptable) to ``p1``.

    Args:
        p0: the in-control error rate.
        p1: the error rate the chart is tuned to detect quickly (> p0).
        h: the decision threshold on the CUSUM statistic.
    """

    p0: float
    p1: float
    h: float

    def __post_init__(self) -> None:
        if not 0 < self.p0 < self.p1 < 1:
            raise ValueError(f"need 0 < p0 < p1 < 1, got p0={self.p0}, p1={self.p1}")
        if self.h <= 0:
            raise ValueError(f"h must be > 0, got {self.h}")

    @property
    def up(self) -> float:
        """Increment after an error."""
        return math.log(self.p1 / self.p0)

    @property
    def down(self) -> float:
        """Increment after a correct answer (negative)."""
        return math.log((1 - self.p1) / (1 - self.p0))

    @classmethod
    def for_arl(cls, p0: float, p1: float, arl0: float) -> CusumDesign:
        """The design whose in-control average run length is ``arl0`` (bisection on ``h``)."""
        if arl0 < 10:
            raise ValueError(f"arl0 must be >= 10 answers, got {arl0}")
        return _design(round(p0, 6), round(p1, 6), float(arl0))

    def arl(self, p: float) -> float:
        """Average number of answers to an alarm when the true error rate is ``p`` (from S = 0)."""
        return cusum_run_length(self, p)[0]

    def p_alarm_within(self, p: float, n: int) -> float:
        """Probability of an alarm within ``n`` answers at true rate ``p`` (from S = 0)."""
        return cusum_run_length(self, p, horizon=n)[1]


@functools.lru_cache(maxsize=32)
def _design(p0: float, p1: float, arl0: float) -> CusumDesign:
    lo, hi = 0.01, 1.0
    while CusumDesign(p0, p1, hi).arl(p0) < arl0:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            raise ValueError(f"no threshold reaches ARL0={arl0} for p0={p0}, p1={p1}")
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if CusumDesign(p0, p1, mid).arl(p0) < arl0 else (lo, mid)
    return CusumDesign(p0, p1, hi)


PHASE1_CONFIDENCE = 0.90  # a Phase-I chart's in-control ARL is at least its arl0 with this confidence


def phase1_p0(errors: int, n: int, *, confidence: float = PHASE1_CONFIDENCE) -> float:
    """The in-control error rate a Phase-I chart is designed for: the one-sided Clopper-Pearson
    upper bound of ``errors / n`` at ``confidence``.

    Why not the estimate itself: a chart designed for p0 = errors / n meets its ARL0 only when
    the true rate is at or below the estimate, about half the time; on a 100-answer Phase I at
    30% its true in-control ARL falls below a 2,000 target in 46% of draws (the bound's: 8%)
    (tests/monitor/test_quality_phase1.py). A Bernoulli CUSUM's run length shortens as the true
    rate rises, so designing for an upper bound keeps ARL >= ARL0 whenever the bound holds, i.e.
    with probability >= ``confidence``; the cost is a slower alarm for rises just above it.
    """
    if n <= 0 or not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n and n > 0, got errors={errors}, n={n}")
    if errors == n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, errors + 1, n - errors))


def phase1_design(errors: int, n: int, arl0: float, *, rise: float | None = None) -> CusumDesign:
    """A chart for the answers after a Phase I of ``n`` reviewed answers with ``errors`` errors:
    p0 = :func:`phase1_p0`, p1 = p0 + ``rise`` (default 2 x p0), capped below 1.

    Raises:
        ValueError: the Phase-I error rate is so high that no higher rate is left to detect.
    """
    p0 = phase1_p0(errors, n)
    p1 = min(p0 + rise, 0.99) if rise is not None else min(2 * p0, 0.99)
    if p1 <= p0:
        raise ValueError(f"Phase I found {errors} errors in {n} reviewed answers (p0 upper bound {p0:.3f}): "
                         "no higher error rate is left for the chart to detect")
    return CusumDesign.for_arl(p0, p1, arl0)


def cusum_run_length(design: CusumDesign, p: float, *, horizon: int | None = None) -> tuple[float, float]:
    """(ARL, P(alarm within ``horizon``)) at true error rate ``p``, from the Brook-Evans chain.

    The statistic lives on ``[0, h)``; it is discretised into ``_GRID`` cells, each answer
    moves it up by ``design.up`` (probability ``p``) or down by ``design.down`` (floored at
    0), and leaving ``[0, h)`` upwards is the alarm. ARL = ``(I - Q)^-1 1`` from cell 0.
    """
    from scipy.sparse import csr_matrix, identity
    from scipy.sparse.linalg import spsolve

    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    m = _GRID
    width = design.h / m
    cells = np.arange(m)
    up = np.rint((cells * width + design.up) / width).astype(int)
    down = np.maximum(np.rint((cells * width + design.down) / width).astype(int), 0)
    rows, cols, vals = [], [], []
    for target, prob in ((up, p), (down, 1 - p)):
        inside = target < m
        rows.append(cells[inside])
        cols.append(target[inside])
        vals.append(np.full(int(inside.sum()), prob))
    q = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    arl = float(spsolve((identity(m, format="csc") - q.tocsc()), np.ones(m))[0]) if p > 0 else math.inf
    within = math.nan
    if horizon is not None:
        dist = np.zeros(m)
        dist[0] = 1.0
        for _ in range(horizon):
            dist = q.T @ dist
        within = float(1.0 - dist.sum())
    return arl, within


@dataclass
class Cusum:
    """The running chart: feed 0/1 outcomes with :meth:`update`; ``alarms`` holds the
    1-based positions where the statistic crossed ``h`` (it restarts at 0 after each)."""

    design: CusumDesign
    statistic: float = 0.0
    seen: int = 0
    alarms: list[int] = field(default_factory=list)
    path: list[float] = field(default_factory=list)

    def update(self, error: bool | int) -> bool:
        """Add one reviewed answer; True when it raises an alarm."""
        step = self.design.up if error else self.design.down
        self.statistic = max(0.0, self.statistic + step)
        self.seen += 1
        self.path.append(self.statistic)
        if self.statistic >= self.design.h:
            self.alarms.append(self.seen)
            self.statistic = 0.0
            return True
        return False

    def run(self, errors: Iterable[bool | int]) -> list[int]:
        for e in errors:
            self.update(e)
        return self.alarms


def cusum_alarms(errors: Sequence[bool | int], design: CusumDesign) -> list[int]:
    """The alarm positions (1-based) of a fresh chart over a whole stream (vectorised enough
    for 10,000s of answers; the loop is a few microseconds per answer)."""
    return Cusum(design).run(errors)


# --------------------------------------------------------------------------- the whole traffic
# The sampled tier estimates the error of auto-approved answers only. The error of *all* the
# traffic a model answered comes from every reviewed answer, each tier standing for its own
# share of the window (post-stratification: a tier's reviewed answers are taken as a random
# sample of that tier's answers, which holds for the hash-drawn sampled tier and for a fully
# reviewed risk tier; it is an assumption while a queue is part-reviewed).
STRATA = {"auto": "auto", "sampled": "auto", "low_confidence": "low_confidence", "mandatory": "mandatory"}


@dataclass(frozen=True, slots=True)
class Stratum:
    answers: int  # the window's answers routed to this tier
    reviewed: int  # of those, reviewed (with the field)
    wrong: int  # of those, the field was wrong


@dataclass(frozen=True, slots=True)
class TrafficRate:
    """One label field's error rate over a whole traffic window, estimated from its reviewed
    answers: ``rate = sum_h W_h * wrong_h / reviewed_h`` over the routing tiers ``h`` (``W_h``:
    the tier's share of the window), with its standard error (``se``) and the strata behind it.
    ``rate`` is None when a tier that answered has no reviewed answer (``note`` says which)."""

    rate: float | None
    se: float | None
    answers: int
    reviewed: int
    strata: dict[str, Stratum]
    note: str = ""


def traffic_rate(rows: Iterable[tuple[str | None, bool | None]]) -> TrafficRate:
    """``rows``: one ``(tier, wrong)`` per answer of the window; ``wrong`` is None where the
    answer was not reviewed. ``tier`` is the routing decision logged with it (None: unrouted).

    The variance has two parts: each tier's review sample (``W_h^2 p_h (1 - p_h) / n_h``, with
    ``p_h`` shrunk to ``(wrong + 1) / (n + 2)`` so a tier of few, all-right reviews is not
    taken as certain) and the window's mix of tiers (``sum_h W_h (p_h - p)^2 / N``): the
    estimate is of the process that produced the window, so two windows of one process differ
    by both (no finite-population correction for a fully reviewed tier).
    """
    counts: dict[str, list[int]] = {}
    for tier, wrong in rows:
        c = counts.setdefault(STRATA.get(tier or "", "unrouted"), [0, 0, 0])
        c[0] += 1
        if wrong is not None:
            c[1] += 1
            c[2] += bool(wrong)
    strata = {k: Stratum(*v) for k, v in counts.items()}
    n_all = sum(s.answers for s in strata.values())
    reviewed = sum(s.reviewed for s in strata.values())
    blind = [k for k, s in strata.items() if s.answers and not s.reviewed]
    if not n_all or blind:
        note = "no answers" if not n_all else f"no reviewed answer in tier(s) {', '.join(sorted(blind))}"
        return TrafficRate(None, None, n_all, reviewed, strata, note)
    weights = {k: s.answers / n_all for k, s in strata.items()}
    rates = {k: s.wrong / s.reviewed for k, s in strata.items()}
    rate = sum(weights[k] * rates[k] for k in strata)
    sampling = sum(weights[k] ** 2 * _shrunk(s) * (1 - _shrunk(s)) / s.reviewed for k, s in strata.items())
    mix = sum(weights[k] * (rates[k] - rate) ** 2 for k in strata) / n_all
    return TrafficRate(rate, math.sqrt(sampling + mix), n_all, reviewed, strata)


def _shrunk(s: Stratum) -> float:
    return (s.wrong + 1) / (s.reviewed + 2)


def rise_test(current: TrafficRate, previous: TrafficRate) -> tuple[float | None, float | None, float | None]:
    """(rise, z, one-sided p) that ``current``'s error rate is above ``previous``'s; Nones
    when either could not be estimated."""
    from scipy.stats import norm

    if current.rate is None or previous.rate is None or current.se is None or previous.se is None:
        return None, None, None
    rise = current.rate - previous.rate
    se = math.hypot(current.se, previous.se)
    if se == 0:
        return rise, None, None
    z = rise / se
    return rise, z, float(norm.sf(z))
