"""A Phase-I quality chart: p0 estimated from the first reviewed answers (statistics on generated
streams, exact over the binomial where the claim is a probability)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta, binom

from tunesmith.config import Config, ConfigError, load_config
from tunesmith.errors import TunesmithError
from tunesmith.monitor.quality import (
    PHASE1_CONFIDENCE,
    Cusum,
    CusumDesign,
    phase1_design,
    phase1_p0,
)
from tunesmith.monitor.runner import QualityReport, _chart
from tunesmith.sample.operate import OperatePlan, phase1_reviews


def config(**quality) -> Config:
    return Config.model_validate({"data": {"sources": [{"path": "x.jsonl"}]}, "monitor": {"quality": quality}})


def test_p0_is_the_one_sided_clopper_pearson_upper_bound():
    assert phase1_p0(30, 100) == pytest.approx(beta.ppf(0.9, 31, 70))
    assert 0.30 < phase1_p0(30, 100) < 0.37
    assert phase1_p0(0, 50) == pytest.approx(1 - 0.1 ** (1 / 50))  # the closed form at zero errors
    assert phase1_p0(20, 20) == 1.0
    d = phase1_design(30, 100, 2_000, rise=0.15)
    assert d.p0 == pytest.approx(phase1_p0(30, 100), abs=1e-6) and d.p1 == pytest.approx(d.p0 + 0.15, abs=1e-6)
    assert phase1_design(30, 100, 2_000).p1 == pytest.approx(2 * d.p0, abs=1e-6)
    with pytest.raises(ValueError, match="no higher error rate"):
        phase1_design(100, 100, 2_000)


def test_the_in_control_guarantee_holds_where_the_plug_in_estimate_misses_half_the_time():
    """Over every Phase I of 100 answers at a true 30% (weighted by its binomial probability):
    the share of charts whose true in-control ARL reaches the 2,000 asked for. Designed for the
    90% upper bound: >= 0.9. Designed for the estimate itself: about half."""
    p, n, arl0, rise = 0.30, 100, 2_000, 0.15
    guaranteed = plug_in = 0.0
    for k in range(n + 1):
        w = binom.pmf(k, n, p)
        if w < 1e-6:
            continue
        guaranteed += w * (phase1_design(k, n, arl0, rise=rise).arl(p) >= arl0)
        plug_in += w * (CusumDesign.for_arl(k / n, k / n + rise, arl0).arl(p) >= arl0)
    assert guaranteed >= PHASE1_CONFIDENCE
    assert 0.4 < plug_in < 0.65


def test_a_rise_after_phase_one_alarms_and_a_steady_stream_rarely_does():
    """Phase I of 100 answers at 30%, then 300 more: at 30% (in control) few charts alarm, at
    50% (a 20-point rise) most do; positions count from the start of the stream."""
    cfg = config(phase1=100, alarm_rise=0.15)
    rng = np.random.default_rng(7)
    steady = risen = 0
    for _ in range(100):
        phase1 = list(rng.random(100) < 0.30)
        chart, _, _ = _chart(cfg, phase1 + list(rng.random(300) < 0.30))
        steady += bool(chart.alarms)
        chart, summary, _ = _chart(cfg, phase1 + list(rng.random(300) < 0.50))
        risen += bool(chart.alarms)
        assert all(a > 100 for a in chart.alarms) and chart.seen == 400
        assert summary["phase1_errors"] == sum(phase1) and summary["p0"] >= sum(phase1) / 100
    assert steady <= 2
    assert risen >= 70


def test_before_phase_one_is_complete_there_is_no_chart_and_it_says_so():
    cfg = config(phase1=40)
    chart, summary, note = _chart(cfg, [True, False] * 10)
    assert chart is None and "h" not in summary and summary["phase1_seen"] == 20
    assert "Phase I: 20 of 40" in note
    report = QualityReport({}, summary, 20, 0.0, [], False, note=note)
    assert report.chart_text == "Phase I 20/40 sampled reviews, no chart yet"
    chart, summary, note = _chart(cfg, [True, False] * 25)  # 20 wrong in the first 40
    assert chart is not None and note == "" and summary["phase1_errors"] == 20
    report = QualityReport({}, summary, chart.seen, chart.statistic, chart.alarms, False)
    assert report.chart_text.startswith("CUSUM ") and "from Phase I (20/40 wrong)" in report.chart_text
    with pytest.raises(TunesmithError, match=r"monitor\.quality\.phase1"):
        _chart(config(phase1=20), [True] * 20)  # every Phase-I answer wrong: nothing left to detect


def test_the_fixed_baseline_chart_is_unchanged():
    chart, summary, note = _chart(config(), [False] * 50)
    assert summary["p0"] == 0.05 and summary["p1"] == 0.10 and "phase1" not in summary
    expected = Cusum(CusumDesign.for_arl(0.05, 0.10, 50_000))
    expected.run([False] * 50)
    assert chart.path == expected.path and note == ""


@pytest.mark.parametrize(("quality", "message"), [
    ({"phase1": 10}, "at least 20"),
    ({"phase1": 100, "baseline_error": 0.1}, "leave baseline_error and alarm_error unset"),
    ({"alarm_rise": 0.1}, "applies to a Phase-I chart"),
])
def test_conflicting_quality_settings_are_named(tmp_path, quality, message):
    lines = "".join(f"\n    {k}: {v}" for k, v in quality.items())
    (tmp_path / "tunesmith.yaml").write_text(
        f"project: p\ndata:\n  sources:\n    - path: x.jsonl\nmonitor:\n  quality:{lines}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(tmp_path)
    assert "monitor.quality" in str(err.value)


def test_the_simulation_sizes_its_phase_one_to_month_one():
    assert phase1_reviews(OperatePlan()) == 100  # 500 requests x half auto-approved x half sampled x 0.8
    assert phase1_reviews(OperatePlan(month1=200)) == 40
    assert phase1_reviews(OperatePlan(month1=50)) == 20
