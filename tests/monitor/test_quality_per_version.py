"""The quality chart runs per model version: a promotion starts the new champion's own chart (and
its own Phase I), and an alarm one version's chart raised neither stands for nor hides another's."""

from __future__ import annotations

from tunesmith.config import Config
from tunesmith.monitor import alarms as alarm_table
from tunesmith.monitor.reviews import Reviewed
from tunesmith.monitor.runner import _chart_version, _quality, charted_version
from tunesmith.registry.ledger import AliasLedger
from tunesmith.workspace import Workspace


def config(**quality) -> Config:
    return Config.model_validate({"data": {"sources": [{"path": "x.jsonl"}]},
                                  "monitor": {"quality": {"arl0": 500, **quality}}})


def sampled(version: str, errors: list[bool], start: float = 0.0) -> list[Reviewed]:
    return [Reviewed(start + i, "sampled", e, ("category",), ("category",) if e else (), f"{version}-{i}", 0, version)
            for i, e in enumerate(errors)]


def test_the_chart_watches_the_champion_else_the_newest_version():
    old, new = sampled("a", [False] * 3), sampled("b", [False] * 2, start=10)
    assert charted_version(old + new, None) == "b"  # no registry alias: the newest answers' version
    assert charted_version(old + new, "a") == "a"
    assert charted_version(old, "b") == "b"  # promoted, not reviewed yet: an empty chart, not the old one
    unnamed = [Reviewed(1.0, "sampled", True)]
    assert charted_version(unnamed, "a") == ""  # a log without versions: one chart over every answer


def test_a_promotion_restarts_the_chart_and_its_phase_one(tmp_path):
    ws = Workspace(tmp_path / "ws")
    cfg = config(phase1=20)
    ledger = AliasLedger(ws)
    ledger.append("champion", "a", expected_from=None, action="promote", by="test")
    # version a: a Phase I at 10%, then a stream at 60% wrong: its chart alarms
    reviews = sampled("a", [i % 10 == 0 for i in range(20)] + [i % 5 < 3 for i in range(80)])
    report = _quality(cfg, ws, reviews)
    assert report.version == "a" and report.alarm and report.alarms
    assert report.reviewed == 100 and "of version a" in report.chart_text
    # b becomes champion with 10 reviews: its own Phase I, 10 of 20, no chart and no alarm
    ledger.append("champion", "b", expected_from="a", action="promote", by="test")
    reviews += sampled("b", [False] * 10, start=1000)
    report = _quality(cfg, ws, reviews)
    assert report.version == "b" and not report.alarm and report.alarms == [] and report.reviewed == 10
    assert report.chart_text == "Phase I 10/20 sampled reviews of version b, no chart yet"
    # every tier rate still counts every version's reviews
    assert report.tiers["sampled"].n == 110


def test_a_recorded_alarm_hides_only_its_own_versions_repeats(tmp_path):
    ws = Workspace(tmp_path / "ws")
    cfg = config(baseline_error=0.05)
    AliasLedger(ws).append("champion", "b", expected_from=None, action="promote", by="test")
    reviews = sampled("b", [True] * 12)
    first = _quality(cfg, ws, reviews)
    assert first.alarm and first.alarms
    position = first.alarms[-1]

    def recorded(version: str) -> alarm_table.Alarm:
        detail = {"quality.cusum": {"position": position, "version": version}}
        return alarm_table.record(ws.db_path, alarm_table.Alarm(
            "quality", ["quality.cusum"], f"sampled 1-{position} {version}", None, None, position, "p0", {}, detail))

    assert _chart_version(recorded("a")) == "a"
    assert _quality(cfg, ws, reviews).alarm  # version a's alarm at the same position does not hide b's
    recorded("b")
    assert not _quality(cfg, ws, reviews).alarm  # b's own alarm, already recorded: not new
    assert _quality(cfg, ws, reviews + sampled("b", [True] * 12, start=100)).alarm  # b alarms again later


def test_an_alarm_recorded_before_charts_were_per_version_belongs_to_the_single_chart(tmp_path):
    ws = Workspace(tmp_path / "ws")
    alarm = alarm_table.record(ws.db_path, alarm_table.Alarm(
        "quality", ["quality.cusum"], "sampled reviewed answers 1-7", None, None, 7, "p0", {},
        {"quality.cusum": {"position": 7}}))
    assert _chart_version(alarm) == ""
