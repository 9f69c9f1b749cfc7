"""The quality statistics on generated reviewed-answer streams: the Wilson interval, the CUSUM's
Markov-chain design against simulation, and the acceptance figures of the operate issue."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.monitor.quality import Cusum, CusumDesign, cusum_alarms, error_rate

SEEDS = range(20)
DESIGN = CusumDesign.for_arl(0.05, 0.10, 50_000)  # the defaults: review.target_error 0.05, 2 x p0, ARL0 50,000


def test_wilson_interval_matches_the_closed_form():
    r = error_rate(5, 100)
    z = 1.959963984540054
    p, n = 0.05, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert r.rate == 0.05
    assert r.low == pytest.approx(centre - half, abs=1e-9)
    assert r.high == pytest.approx(centre + half, abs=1e-9)
    assert error_rate(0, 0).rate is None
    assert error_rate(0, 20).low == 0.0 and error_rate(0, 20).high > 0.1  # no errors seen is not "0% for sure"


def test_bad_designs_and_rates_are_refused():
    with pytest.raises(ValueError, match="p0 < p1"):
        CusumDesign(0.1, 0.05, 3.0)
    with pytest.raises(ValueError, match="errors <= n"):
        error_rate(5, 3)


def test_the_markov_chain_arl_matches_simulation():
    design = CusumDesign.for_arl(0.1, 0.2, 300)
    assert 300 <= design.arl(0.1) < 330  # the bisection lands on the target (grid rounding above it)
    rng = np.random.default_rng(0)
    for p, expected in ((0.1, design.arl(0.1)), (0.2, design.arl(0.2))):
        lengths = []
        for _ in range(1500):
            chart = Cusum(design)
            while not chart.update(rng.random() < p):
                pass
            lengths.append(chart.seen)
        assert np.mean(lengths) == pytest.approx(expected, rel=0.08), p


def test_the_default_design_states_its_figures():
    assert DESIGN.h == pytest.approx(6.40, abs=0.02)
    assert DESIGN.arl(0.05) >= 50_000
    assert DESIGN.p_alarm_within(0.12, 300) > 0.9
    assert DESIGN.p_alarm_within(0.05, 10_000) < 0.2


def test_a_rise_from_5_to_12_percent_alarms_within_300_reviewed_answers():
    """2,000 answers at 5%, then 12%: an alarm within 300 answers of the rise, with no alarm
    before it. The design gives P(within 300) = 0.92 per stream, so 20 seeds may miss a few."""
    delays = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        before = rng.random(2000) < 0.05
        after = rng.random(1000) < 0.12
        alarms = cusum_alarms(np.r_[before, after], DESIGN)
        assert not [a for a in alarms if a <= 2000], f"seed {seed}: false alarm before the rise"
        delays.append(min((a - 2000 for a in alarms), default=10**9))
    detected = sum(d <= 300 for d in delays)
    assert delays[0] <= 300  # the pinned seed
    assert detected >= 17, f"only {detected}/20 streams alarmed within 300 answers: {delays}"


def test_a_stable_5_percent_stream_of_10000_gives_at_most_one_false_alarm():
    counts = [len(cusum_alarms(np.random.default_rng(100 + s).random(10_000) < 0.05, DESIGN)) for s in SEEDS]
    assert counts[0] <= 1
    assert sum(c <= 1 for c in counts) >= 19, counts
    assert sum(counts) <= 8, counts  # ~0.2 expected per stream


def test_the_chart_restarts_after_an_alarm():
    chart = Cusum(CusumDesign(0.05, 0.10, 2.0))
    hits = [chart.update(1) for _ in range(6)]  # each error adds ln 2 = 0.69: alarms at 3 and 6
    assert hits == [False, False, True, False, False, True]
    assert chart.alarms == [3, 6] and chart.statistic == 0.0
