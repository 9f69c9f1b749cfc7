"""Model versions as the registry sees them: what each one is, where it came from and how it did.

Everything is read from what the stages already wrote (no copy to keep in sync):

    snapshot/<id>/manifest.json     source-file hashes, counts, drop reasons, PII settings
    model/<id>/model_version.json   base model, method, snapshot, config hash, metrics, run dir
    runs/train-<key>/mlflow_run_id  the MLflow run of the training, when tracking was on
    eval/<id>/results.json          ladder, comparisons, gate checks, forgetting, probes
    export/<id> (artifact meta)     formats, files with sha256, GGUF or why it was skipped
    eval_results (SQLite)           every rung's metrics with CIs, per eval and pack
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.gate import FINETUNED_RUNGS
from tunesmith.evaluate.results import Comparison as ResultComparison
from tunesmith.evaluate.results import load_results
from tunesmith.registry.records import (
    Comparison,
    EvalSummary,
    ExportInfo,
    GateVerdict,
    Headline,
    MetricCI,
    SnapshotInfo,
    SourceFile,
    TrainingRun,
)
from tunesmith.workspace import Artifact, Workspace


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file of an artifact, or {} when it is missing or unreadable (an old or foreign one)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def version_record(art: Artifact) -> dict[str, Any]:
    """model_version.json, falling back to the artifact's meta (the same keys, fewer of them)."""
    return read_json(art.path / "model_version.json") or dict(art.meta)


# ---------------------------------------------------------------------------- evals
def _ladder(ws: Workspace, eval_id: str, metric: str) -> dict[str, MetricCI]:
    db = sqlite3.connect(ws.db_path, timeout=30)
    try:
        rows = db.execute("SELECT rung, mean, low, high, n FROM eval_results WHERE eval_id = ? AND metric = ?"
                          " ORDER BY rowid", (eval_id, metric)).fetchall()
    finally:
        db.close()
    return {r[0]: MetricCI(*r[1:]) for r in rows}


def _headline(metric: str | None, ladder: dict[str, MetricCI]) -> Headline | None:
    """The fine-tuned rung the gate compares: the higher of finetuned and finetuned_fewshot."""
    scored = [(r, ladder[r]) for r in FINETUNED_RUNGS if r in ladder]
    if not metric or not scored:
        return None
    rung, ci = max(scored, key=lambda rc: -1.0 if rc[1].mean is None else rc[1].mean)
    return Headline(metric, rung, ci.mean, ci.low, ci.high, ci.n)


def _comparison(c: ResultComparison | None, baseline: str | None = None) -> Comparison | None:
    if c is None:
        return None
    return Comparison(c.baseline or baseline, c.diff, c.low, c.high, c.significant)


def eval_summary(ws: Workspace, art: Artifact, *, details: bool = False) -> EvalSummary:
    """One eval; ``details`` also reads its results.json (gate checks, comparisons, forgetting).

    Raises:
        TunesmithError: (with ``details``) a results.json that is missing or unreadable, naming
            the file and the key at fault.
    """
    metric = art.meta.get("headline")
    ladder = _ladder(ws, art.id, metric) if metric else {}
    base = {"eval_id": art.id, "pack": art.meta.get("pack", ""), "created": art.created,
            "headline": _headline(metric, ladder), "passed": art.meta.get("passed"), "ladder": ladder,
            "path": art.path}
    if not details:
        return EvalSummary(**base)
    r = load_results(art.path / "results.json")
    cmp = _comparison(r.lead)
    return EvalSummary(
        **base, cases=r.cases, checks=list(r.checks), vs_best_baseline=cmp,
        fields_vs_best_baseline={f: _comparison(c, cmp.baseline if cmp else None)  # type: ignore[misc]
                                 for f, c in r.fields_vs_best_baseline.items()},
        forgetting=r.forgetting, probes=r.probes, recommendation=r.recommendation)


def evals_of(ws: Workspace, model_id: str) -> list[Artifact]:
    """The eval artifacts of one model version, oldest first."""
    return [a for a in ws.list("eval") if a.meta.get("model") == model_id]


def resolve_pack(ws: Workspace, pinned: str | None) -> str | None:
    """The full id of a pinned eval pack (``eval.pack`` may be a prefix); the prefix itself
    when the pack is not in this workspace (then no eval matches it)."""
    if not pinned:
        return None
    try:
        return ws.get("evalpack", pinned).id
    except TunesmithError:
        return pinned


def gate_eval(ws: Workspace, model_id: str, pinned_pack: str | None, *,
              evals: list[Artifact] | None = None) -> Artifact | None:
    """The eval the gate of a model version is read from: its latest on the pinned pack when the
    config pins one (``eval.pack``), otherwise its latest on any pack."""
    evals = evals_of(ws, model_id) if evals is None else evals
    if pinned_pack:
        evals = [a for a in evals if str(a.meta.get("pack", "")).startswith(pinned_pack)]
    return evals[-1] if evals else None


def gate_verdict(ws: Workspace, model_id: str, pinned_pack: str | None) -> GateVerdict:
    art = gate_eval(ws, model_id, pinned_pack)
    if art is None:
        return GateVerdict(None, pinned_pack, pinned=bool(pinned_pack), passed=False)
    summary = eval_summary(ws, art, details=True)
    passed = bool(summary.passed) and not summary.failed_checks
    return GateVerdict(art.id, summary.pack, bool(pinned_pack), passed, summary.checks, art.created)


# ---------------------------------------------------------------------------- lineage
def exports_of(ws: Workspace, model_id: str) -> list[ExportInfo]:
    """The published exports of one model version, oldest first."""
    return [ExportInfo(a.id, a.created, a.path, list(a.meta.get("formats") or []), list(a.meta.get("files") or []),
                       a.meta.get("gguf"), a.meta.get("gguf_skipped"), dict(a.meta.get("settings") or {}))
            for a in ws.list("export") if a.meta.get("model") == model_id]


def snapshot_info(ws: Workspace, snapshot_id: str | None) -> SnapshotInfo | None:
    if not snapshot_id:
        return None
    try:
        art = ws.get("snapshot", snapshot_id)
    except TunesmithError:
        return SnapshotInfo(snapshot_id, 0.0)  # trained on a snapshot of another workspace
    manifest = read_json(art.path / "manifest.json")
    sources = [SourceFile(s.get("path", ""), s.get("sha256", ""), s.get("bytes"), s.get("format"))
               for s in manifest.get("sources", [])]
    return SnapshotInfo(
        art.id, art.created, art.path, manifest.get("config_hash") or art.meta.get("config_hash"),
        sources, manifest.get("counts") or art.meta.get("counts") or {},
        (manifest.get("config") or {}).get("pii") or {}, manifest.get("contamination") or {})


def training_run(record: dict[str, Any]) -> TrainingRun:
    run_dir = Path(record["run_dir"]) if record.get("run_dir") else None
    mlflow_run_id = None
    if run_dir is not None and (run_dir / "mlflow_run_id").exists():
        mlflow_run_id = (run_dir / "mlflow_run_id").read_text().strip() or None
    return TrainingRun(run_dir, record.get("run_key"), record.get("config_hash"), record.get("seed"),
                       record.get("metrics") or {}, mlflow_run_id, record.get("config") or {})
