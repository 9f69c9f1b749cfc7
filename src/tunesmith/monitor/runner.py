"""``tunesmith monitor``: one run compares the latest traffic window with its reference, reads
the reviewed answers, and records any alarm as a retrain trigger.

Significance is shared out: the run's false-alarm budget ``monitor.alpha`` is split evenly
(Bonferroni) over the drift checks it runs, so a run of six checks at alpha 0.01 judges each at
0.0017 and a no-drift window alarms in at most 1% of runs (20 windows: P(two or more false
alarms) < 2%). The quality chart has its own stated design (an average run length), because it
watches a stream, not a window.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import Config, MonitorConfig
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.retrieval import Embedder
from tunesmith.monitor import alarms as alarm_table
from tunesmith.monitor import drift
from tunesmith.monitor.embedders import choose_embedder
from tunesmith.monitor.quality import (
    PHASE1_CONFIDENCE,
    Cusum,
    CusumDesign,
    Rate,
    TrafficRate,
    error_rate,
    phase1_design,
    rise_test,
    traffic_rate,
)
from tunesmith.monitor.reviews import Reviewed, load_reviewed
from tunesmith.monitor.traffic import (
    NotEnoughTraffic,
    Record,
    Window,
    answer_labels,
    snapshot_window,
    traffic_windows,
)
from tunesmith.registry.ledger import AliasLedger
from tunesmith.workspace import Workspace, write_atomic

KINDS = {"input": "input_drift", "output": "output_drift"}
DETECT_WITHIN = 300  # the horizon the CUSUM design reports P(alarm within) for


@dataclass
class FieldRise:
    """One label field's error rate over the whole traffic of the latest window and of the window
    before it (each estimated from its reviewed answers, tier by tier), and the one-sided test
    that it rose."""

    current: TrafficRate
    previous: TrafficRate | None
    rise: float | None
    z: float | None
    p_value: float | None
    alpha: float
    min_rise: float
    alarm: bool
    note: str = ""

    def detail(self) -> dict[str, Any]:
        """What an alarm record keeps of the test."""
        return {"test": "stratified-z", "p_value": self.p_value, "rise": self.rise, "error_rate": self.current.rate,
                "previous_rate": self.previous.rate if self.previous else None}


@dataclass
class QualityReport:
    """Reviewed answers: error rates per tier and the CUSUM over the sampled tier."""

    tiers: dict[str, Rate]
    design: dict[str, Any]  # p0, p1, h, ... (before a Phase I is complete: phase1, phase1_seen only)
    reviewed: int  # sampled answers the chart has seen (a Phase I's included)
    statistic: float
    alarms: list[int]  # 1-based positions in the sampled stream
    alarm: bool  # an alarm no earlier run recorded
    path: list[float] = field(default_factory=list)
    note: str = ""
    fields: dict[str, Rate] = field(default_factory=dict)  # sampled tier: error rate per label field
    traffic: dict[str, FieldRise] = field(default_factory=dict)  # every tier: per field, window vs previous
    current: str = ""  # the windows the traffic rates cover
    previous: str = ""
    version: str = ""  # the model version whose sampled answers the chart runs on ("" = every answer)

    @property
    def field_alarms(self) -> list[str]:
        return [name for name, f in self.traffic.items() if f.alarm]

    @property
    def chart_text(self) -> str:
        """The chart's state in a few words: ``CUSUM s / h h`` or how far its Phase I is."""
        d = self.design
        if "h" not in d:
            return (f"Phase I {d.get('phase1_seen', 0)}/{d.get('phase1')} sampled reviews{self.of_version}, "
                    "no chart yet")
        phase1 = (f", p0 {d['p0']:.3f} from Phase I ({d['phase1_errors']}/{d['phase1']} wrong)"
                  if d.get("phase1") else "")
        return f"CUSUM {self.statistic:.2f} / h {d['h']:.2f}{phase1}{self.of_version}"

    @property
    def of_version(self) -> str:
        """`` of version <id>`` when the chart watches one version, else ""."""
        return f" of version {self.version[:12]}" if self.version else ""

    @property
    def alarming(self) -> bool:
        """A new CUSUM alarm, or a field whose whole-traffic error rose."""
        return self.alarm or bool(self.field_alarms)


@dataclass
class MonitorReport:
    project: str
    created: float
    reference: str
    current: str
    n_reference: int
    n_current: int
    versions: dict[str, int]
    embedder: str
    embedder_why: str
    alpha: float
    alpha_per_check: float
    findings: list[drift.Finding]
    quality: QualityReport | None
    alarms: list[alarm_table.Alarm] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def alarm(self) -> bool:
        return any(f.alarm for f in self.findings) or bool(self.quality and self.quality.alarming)

    def to_json(self, *, samples: bool = False) -> dict[str, Any]:
        """Everything but the raw per-request values (``samples=True`` keeps them)."""
        out = asdict(self)
        out["alarm"] = self.alarm
        if not samples:
            for f in out["findings"]:
                f["detail"] = {k: v for k, v in f["detail"].items()
                               if k not in ("reference_lengths", "current_lengths", "reference", "current")
                               or f["check"].startswith("output.label")}
            if out["quality"]:
                out["quality"].pop("path", None)
        if self.quality is not None:
            out["quality"]["field_alarms"] = self.quality.field_alarms
        return out


def run_monitor(cfg: Config, *, window: int | None = None, reference: str | None = None,
                record: bool = True, reviewed: list[Reviewed] | None = None) -> MonitorReport:
    """Compare the latest ``window`` requests with ``reference`` (``snapshot`` | ``previous``).

    Raises:
        NotEnoughTraffic: a window has fewer than ``monitor.min_requests`` answered requests.
        TunesmithError: no snapshot to compare with, or a bad option.
    """
    m = cfg.monitor
    size = window or m.window
    mode = reference or m.reference
    if mode not in ("snapshot", "previous"):
        raise TunesmithError(f"--reference must be snapshot or previous, got {mode!r}")
    if size < m.min_requests:
        raise NotEnoughTraffic(f"a window of {size} requests is below monitor.min_requests ({m.min_requests}); "
                               f"use --window {m.min_requests} or more")
    ws = Workspace(cfg.workspace_dir)
    windows = traffic_windows(ws.db_path, size, count=2)  # the window before: quality's comparison
    current = _enough(windows[0], m.min_requests, "the latest window")
    ref = (_enough(windows[1], m.min_requests, "the previous window") if mode == "previous"
           else _snapshot_reference(cfg, ws))
    # the snapshot's texts went through prepare's normaliser; traffic gets the same, so a curly
    # quote or a collapsed space is not drift (idempotent on text already normalised)
    current, ref = _normalised(cfg, current), _normalised(cfg, ref)
    outputs = _model_outputs(ws) if mode == "snapshot" else None
    findings, choice_name, choice_why = _drift_findings(cfg, ref, current, outputs)
    per_check = findings[0].alpha if findings else m.alpha
    quality = _quality(cfg, ws, reviewed, current, windows[1])
    report = MonitorReport(cfg.project, time.time(), ref.label, current.label, len(ref.records),
                           len(current.records), current.versions, choice_name, choice_why, m.alpha, per_check,
                           findings, quality)
    if outputs is not None:
        report.notes.append(f"output checks (labels, confidence) compared with {outputs.label}, not the training "
                            "labels")
    if current.unmatched_prompts:
        report.notes.append(f"{current.unmatched_prompts} prompt(s) in no known chat template were compared whole")
    if record:
        report.alarms = _record(ws, report, current)
    return report


def _enough(window: Window, needed: int, what: str) -> Window:
    if len(window.records) < needed:
        raise NotEnoughTraffic(
            f"{what} holds {len(window.records)} answered request(s); at least {needed} are needed to test for drift "
            "(monitor.min_requests). This is not an alarm and nothing was recorded: serve more traffic, or use a "
            "smaller --window.")
    return window


def _normalised(cfg: Config, window: Window) -> Window:
    from dataclasses import replace

    from tunesmith.data.normalise import build_normaliser

    norm = build_normaliser(cfg.data.normalise)
    window.records = [replace(r, text=norm(r.text)) for r in window.records]
    return window


def _snapshot_reference(cfg: Config, ws: Workspace) -> Window:
    """The train split of the champion's snapshot (else the latest version's, else the latest snapshot)."""
    from tunesmith.data.pipeline import _salt
    from tunesmith.registry.ledger import AliasLedger
    from tunesmith.registry.versions import version_record
    from tunesmith.serve.requestlog import pii_scrubber

    snapshot_id = None
    champion = AliasLedger(ws).current().get("champion")
    model = ws.get("model", champion) if champion else ws.latest("model")
    if model is not None:
        snapshot_id = version_record(model).get("snapshot")
    art = ws.get("snapshot", snapshot_id) if snapshot_id else ws.latest("snapshot")
    if art is None:
        raise TunesmithError(f"no training snapshot in {ws.root} to compare traffic with: run `tunesmith prepare`, "
                             "or use --reference previous")
    scrub = pii_scrubber(cfg.data.pii, _salt(cfg))
    return snapshot_window(art.path, art.id, scrub=scrub, limit=cfg.monitor.max_reference, seed=cfg.seed)


def _model_outputs(ws: Workspace) -> Window | None:
    """What the served version (the champion, else the latest version) answered on held-out
    cases of its own training distribution: the fine-tuned rung's answers, with their
    calibrated confidences when the eval fitted a calibration, from its eval with the most
    cases. The reference for *output* drift: the training labels are what the model should
    say, not what it does say, so a model that is biased on one field (urgency "high" where
    the truth is "critical") would alarm on in-distribution traffic against them. None when
    the version has no eval: the output checks then use the training labels."""
    from tunesmith.evaluate.results import load_results
    from tunesmith.registry.ledger import AliasLedger

    champion = AliasLedger(ws).current().get("champion")
    model = ws.get("model", champion) if champion else ws.latest("model")
    if model is None:
        return None
    rungs = []  # (cases answered, has confidences, eval id, the fine-tuned rung)
    for art in ws.list("eval"):
        if art.meta.get("model") != model.id:
            continue
        try:
            rung = load_results(art.path).ladder.get("finetuned")
        except TunesmithError:  # an incomplete or foreign folder: not a reference
            continue
        if rung is not None and rung.answers:
            rungs.append((len(rung.answers), rung.confidence is not None, art.id, rung))
    if not rungs:
        return None
    _, _, eval_id, rung = max(rungs, key=lambda r: r[:2])
    conf = rung.confidence or [None] * len(rung.answers)
    records = [Record(f"{eval_id}:{i}", 0.0, "", a, model.id, c)
               for i, (a, c) in enumerate(zip(rung.answers, conf, strict=False))]
    return Window(f"eval {eval_id} (the version's answers to {len(records)} held-out cases)", records,
                  meta={"eval": eval_id})


def _label_fields(cfg: Config) -> tuple[list[str], bool]:
    out = cfg.eval.output
    if out.kind == "label":
        return ["label"], True
    return list(out.label_fields), False


def _drift_findings(cfg: Config, ref: Window, cur: Window,
                    outputs: Window | None = None) -> tuple[list[drift.Finding], str, str]:
    fields, whole = _label_fields(cfg)
    choice = choose_embedder(cfg.monitor.embedder)
    findings = drift_findings(ref, cur, cfg.monitor, fields=fields, whole_label=whole, embedder=choice.embedder,
                              seed=cfg.seed, cache=cfg.workspace_dir / "cache" / "monitor", outputs=outputs)
    return findings, choice.embedder.name, choice.why


def drift_findings(ref: Window, cur: Window, m: MonitorConfig, *, fields: list[str], whole_label: bool,
                   embedder: Embedder, seed: int = 0, cache: Path | None = None,
                   outputs: Window | None = None) -> list[drift.Finding]:
    """Every drift check of one run, each judged at ``m.alpha`` / (number of checks).
    ``cache``: a folder where the reference's embeddings are kept between runs. ``outputs``:
    the reference of the output checks (labels, confidence) when it is not ``ref`` (the
    version's own answers on held-out cases, see :func:`_model_outputs`)."""
    inputs_ref, ref = ref, outputs if outputs is not None else ref
    ref_conf = [r.confidence for r in ref.records if r.confidence is not None]
    cur_conf = [r.confidence for r in cur.records if r.confidence is not None]
    with_conf = len(ref_conf) >= m.min_requests and len(cur_conf) >= m.min_requests
    alpha = m.alpha / (3 + len(fields) + int(with_conf))
    findings = [
        drift.length_test(inputs_ref.texts, cur.texts, alpha=alpha, min_d=m.min_length_ks),
        drift.unseen_test(inputs_ref.texts, cur.texts, alpha=alpha, min_rise=m.min_unseen_rise, seed=seed),
        drift.embedding_test(_encode(embedder, inputs_ref, cache), embedder.encode(cur.texts), alpha=alpha,
                             min_auc=m.min_auc, permutations=m.permutations,
                             classifier_permutations=m.classifier_permutations, seed=seed,
                             embedder=getattr(embedder, "name", type(embedder).__name__)),
    ]
    ref_labels = [answer_labels(r.answer, fields, whole_label=whole_label) for r in ref.records if r.answer is not None]
    cur_labels = [answer_labels(r.answer, fields, whole_label=whole_label) for r in cur.records]
    for f in fields:
        findings.append(drift.label_test(f, [x[f] for x in ref_labels], [x[f] for x in cur_labels], alpha=alpha,
                                         min_js=m.min_js))
    if with_conf:
        findings.append(drift.confidence_test(ref_conf, cur_conf, alpha=alpha, min_d=m.min_confidence_ks))
    else:
        why = ("the reference is training data (no model confidences)" if not ref_conf
               else "too few logged confidences")
        findings.append(drift.skipped("output.confidence", "ks", why, alpha, len(ref_conf), len(cur_conf)))
    return findings


def _encode(embedder: Embedder, window: Window, cache: Path | None) -> np.ndarray:
    """The window's embeddings; a snapshot reference's are cached (keyed by the embedder and the
    texts): MiniLM on 2,000 tickets is minutes on a busy CPU, and the snapshot never changes."""
    name = getattr(embedder, "name", None)
    if cache is None or name is None or "snapshot" not in window.meta:
        return embedder.encode(window.texts)
    digest = hashlib.sha256("\x00".join([name, *window.texts]).encode()).hexdigest()[:24]
    path = cache / f"{window.meta['snapshot'][:16]}-{digest}.npy"
    if path.is_file():
        try:
            vectors = np.load(path, allow_pickle=False)
            if vectors.shape[0] == len(window.texts):
                return vectors
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and replaced
    vectors = np.asarray(embedder.encode(window.texts), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    write_atomic(path, buf.getvalue())
    return vectors


# --------------------------------------------------------------------------- quality
def quality_design(cfg: Config) -> CusumDesign:
    """The chart's design from the config: p0 = ``baseline_error`` (default ``review.target_error``)."""
    q = cfg.monitor.quality
    p0 = q.baseline_error if q.baseline_error is not None else cfg.review.target_error
    p1 = q.alarm_error if q.alarm_error is not None else min(2 * p0, 0.99)
    if p1 <= p0:
        raise TunesmithError(f"monitor.quality.alarm_error ({p1}) must be above the baseline error rate ({p0})")
    return CusumDesign.for_arl(p0, p1, q.arl0)


def _chart(cfg: Config, stream: list[bool]) -> tuple[Cusum | None, dict[str, Any], str]:
    """The CUSUM over the sampled tier's reviewed answers (oldest first): (the chart, its design
    summary, a note). With ``monitor.quality.phase1`` = N the first N answers only set p0 (Phase
    I) and the chart runs on the rest, its positions counted over the whole stream; before N
    answers there is no chart."""
    q = cfg.monitor.quality
    summary: dict[str, Any] = {"arl0": q.arl0}
    if q.phase1:
        summary |= {"phase1": q.phase1, "phase1_seen": min(len(stream), q.phase1)}
        if len(stream) < q.phase1:
            return None, summary, (f"Phase I: {len(stream)} of {q.phase1} sampled reviewed answers collected; the "
                                   "chart starts after them (monitor.quality.phase1)")
        errors = sum(stream[: q.phase1])
        try:
            design = phase1_design(errors, q.phase1, q.arl0, rise=q.alarm_rise)
        except ValueError as exc:
            raise TunesmithError(f"monitor.quality.phase1: {exc}") from exc
        summary |= {"phase1_errors": errors, "phase1_rate": errors / q.phase1,
                    "phase1_confidence": PHASE1_CONFIDENCE}
        chart = Cusum(design, seen=q.phase1)
        chart.run(stream[q.phase1:])
    else:
        design = quality_design(cfg)
        chart = Cusum(design)
        chart.run(stream)
    summary |= {"p0": design.p0, "p1": design.p1, "h": design.h, "arl_at_p1": design.arl(design.p1),
                f"p_alarm_within_{DETECT_WITHIN}_at_p1": design.p_alarm_within(design.p1, DETECT_WITHIN)}
    return chart, summary, ""


def charted_version(sampled: list[Reviewed], champion: str | None) -> str:
    """The model version the quality chart watches: the champion when the registry names one, else
    the version that answered the newest sampled review; "" (every answer, one chart) when the
    reviews name no version. A new version starts its own chart (and its own Phase I): its error
    rate is a new process, and the old champion's statistic says nothing about it."""
    named = [r.version for r in sampled if r.version]
    if not named:
        return ""
    return champion or named[-1]


def _quality(cfg: Config, ws: Workspace, reviewed: list[Reviewed] | None, current: Window | None = None,
             previous: Window | None = None) -> QualityReport | None:
    items = load_reviewed(ws.db_path) if reviewed is None else reviewed
    q = cfg.monitor.quality
    tiers = {}
    for tier in ("sampled", "low_confidence", "mandatory"):
        rows = [r for r in items if r.tier == tier]
        rate = error_rate(sum(r.error for r in rows), len(rows))
        tiers[tier] = rate if len(rows) >= q.min_reviewed else Rate(rate.errors, rate.n, None, None, None)
    sampled = sorted((r for r in items if r.tier == "sampled"), key=lambda r: r.decided)
    champion = AliasLedger(ws).current().get("champion") if any(r.version for r in sampled) else None
    version = charted_version(sampled, champion)
    stream = [r.error for r in sampled if not version or r.version == version]
    chart, summary, note = _chart(cfg, stream)
    seen_before = max((_position(a) for a in alarm_table.history(ws.db_path, kind="quality")
                       if _chart_version(a) == version), default=0)
    alarms = chart.alarms if chart else []
    new = [a for a in alarms if a > seen_before]
    note = note or ("" if items else "no reviewed answers yet (tunesmith review)")
    report = QualityReport(tiers, summary, chart.seen if chart else len(stream), chart.statistic if chart else 0.0,
                           alarms, bool(new), chart.path if chart else [], note,
                           field_rates(sampled, q.min_reviewed), version=version)
    if current is not None:
        report.traffic = field_rises(cfg, items, current, previous)
        report.current, report.previous = current.label, previous.label if previous else ""
    return report


def field_rises(cfg: Config, items: list[Reviewed], current: Window, previous: Window | None) -> dict[str, FieldRise]:
    """Per label field: the whole-traffic error rate of ``current`` and of ``previous`` (from the
    reviewed answers of each, tier by tier), and the test that it rose. The fields' tests share
    ``monitor.alpha`` (Bonferroni); an alarm also needs a rise of ``monitor.quality.min_field_rise``."""
    m = cfg.monitor
    by_request = {r.request_id: r for r in items if r.request_id and r.choice == 0}
    names = list(dict.fromkeys(f for r in items for f in r.fields))
    usable = previous is not None and len(previous.records) >= m.min_requests
    alpha = m.alpha / max(len(names), 1)

    def rate(window: Window, name: str) -> TrafficRate:
        rows = []
        for rec in window.records:
            rev = by_request.get(rec.request_id)
            rows.append((rec.tier, (name in rev.wrong) if rev is not None and name in rev.fields else None))
        return traffic_rate(rows)

    out = {}
    for name in names:
        now = rate(current, name)
        before = rate(previous, name) if usable and previous is not None else None
        rise, z, p = rise_test(now, before) if before is not None else (None, None, None)
        alarm = p is not None and rise is not None and p < alpha and rise >= m.quality.min_field_rise
        note = ("no earlier window of monitor.min_requests answers to compare with" if not usable
                else now.note or (before.note if before else ""))
        out[name] = FieldRise(now, before, rise, z, p, alpha, m.quality.min_field_rise, bool(alarm), note)
    return out


def field_rates(rows: list[Reviewed], min_reviewed: int) -> dict[str, Rate]:
    """Each label field's error rate among ``rows`` (answers that have the field), with its
    Wilson CI once ``min_reviewed`` answers have it."""
    out = {}
    for name in dict.fromkeys(f for r in rows for f in r.fields):
        have = [r for r in rows if name in r.fields]
        rate = error_rate(sum(name in r.wrong for r in have), len(have))
        out[name] = rate if len(have) >= min_reviewed else Rate(rate.errors, rate.n, None, None, None)
    return out


# --------------------------------------------------------------------------- alarms
def _record(ws: Workspace, report: MonitorReport, current: Window) -> list[alarm_table.Alarm]:
    recorded = []
    for prefix, kind in KINDS.items():
        hits = [f for f in report.findings if f.alarm and f.check.startswith(prefix + ".")]
        if hits:
            detail = {f.check: {"test": f.test, "p_value": f.p_value, f.effect_name: f.effect} for f in hits}
            recorded.append(alarm_table.record(ws.db_path, alarm_table.Alarm(
                kind, [f.check for f in hits], current.label, current.start, current.end, len(current.records),
                report.reference, current.versions, detail)))
    q = report.quality
    if q and q.alarm:
        position = q.alarms[-1]
        rate = q.tiers["sampled"]
        detail = {"quality.cusum": {"test": "cusum", "p_value": None, "error_rate": rate.errors / max(rate.n, 1),
                                    "low": rate.low, "high": rate.high, "reviewed": rate.n, "position": position,
                                    "h": q.design["h"], "p0": q.design["p0"], "p1": q.design["p1"],
                                    "version": q.version}}
        recorded.append(alarm_table.record(ws.db_path, alarm_table.Alarm(
            "quality", ["quality.cusum"], f"sampled reviewed answers 1-{position}{q.of_version}", None, None,
            q.reviewed, f"p0={q.design['p0']}", {q.version: q.reviewed} if q.version else {}, detail)))
    if q and q.field_alarms:
        detail = {f"quality.field.{name}": rise.detail() for name, rise in q.traffic.items() if rise.alarm}
        recorded.append(alarm_table.record(ws.db_path, alarm_table.Alarm(
            "quality", list(detail), current.label, current.start, current.end, len(current.records),
            q.previous, current.versions, detail)))
    return recorded


def _position(alarm: alarm_table.Alarm) -> int:
    """The chart position a recorded quality alarm was raised at."""
    return int(alarm.detail.get("quality.cusum", {}).get("position", 0))


def _chart_version(alarm: alarm_table.Alarm) -> str:
    """The version whose chart raised a recorded CUSUM alarm ("" for one chart over every answer,
    and for alarms recorded before charts were kept per version)."""
    return str(alarm.detail.get("quality.cusum", {}).get("version") or "")
