"""Typed records the registry hands to its callers (the CLI, later the server and the UI).

Times are POSIX seconds in the records; ``to_json`` turns every field marked as a time into an
ISO-8601 UTC string, paths into strings and nested records into dicts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tunesmith.evaluate.results import Check, Forgetting, ProbeResult


def _time(**kwargs: Any) -> Any:
    """A dataclass field holding POSIX seconds, written as ISO-8601 by ``to_json``."""
    return field(metadata={"time": True}, **kwargs)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="seconds")


def to_json(obj: Any) -> Any:
    """Records -> plain JSON values (dicts, lists, strings, numbers)."""
    if isinstance(obj, BaseModel):  # the eval's typed results: the keys results.json has
        return obj.model_dump(exclude_unset=True)
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: iso(getattr(obj, f.name)) if f.metadata.get("time") else to_json(getattr(obj, f.name))
                for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass(frozen=True, slots=True)
class MetricCI:
    """One metric of one rung: mean and 95% CI over ``n`` cases."""

    mean: float | None
    low: float | None
    high: float | None
    n: int | None


@dataclass(frozen=True, slots=True)
class Headline:
    """The headline metric of the fine-tuned rung the gate compared (``finetuned`` or
    ``finetuned_fewshot``, whichever scored higher)."""

    metric: str
    rung: str
    mean: float | None
    low: float | None
    high: float | None
    n: int | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """A paired difference (fine-tuned − ``baseline``) with its 95% CI."""

    baseline: str | None
    diff: float | None
    low: float | None
    high: float | None
    excludes_zero: bool


@dataclass(frozen=True)
class EvalSummary:
    """One eval of a model version on one pack. ``ladder`` (headline metric per rung) comes from
    the database; the fields below it are filled only when the results file was read."""

    eval_id: str
    pack: str
    created: float = _time()
    headline: Headline | None = None
    passed: bool | None = None
    ladder: dict[str, MetricCI] = field(default_factory=dict)
    path: Path | None = None
    cases: int | None = None
    checks: list[Check] = field(default_factory=list)
    vs_best_baseline: Comparison | None = None
    fields_vs_best_baseline: dict[str, Comparison] = field(default_factory=dict)
    forgetting: Forgetting = field(default_factory=Forgetting)
    probes: dict[str, ProbeResult] = field(default_factory=dict)  # base / finetuned
    recommendation: str | None = None

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class GateVerdict:
    """The gate a promotion was judged by: which eval, on which pack, and why that pack."""

    eval_id: str | None
    pack: str | None
    pinned: bool  # True: the config's eval.pack; False: the model's latest eval on any pack
    passed: bool
    checks: list[Check] = field(default_factory=list)
    created: float | None = _time(default=None)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class VersionSummary:
    """One row of ``tunesmith models``."""

    id: str
    created: float = _time()
    base_model: str | None = None
    method: str | None = None
    snapshot: str | None = None
    eval: EvalSummary | None = None  # the eval the gate reads (pinned pack, else the latest)
    aliases: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The compact JSON of one ``tunesmith models`` row."""
        e = self.eval
        return {"id": self.id, "created": iso(self.created), "base_model": self.base_model, "method": self.method,
                "snapshot": self.snapshot, "eval_pack": e.pack if e else None, "eval_id": e.eval_id if e else None,
                "headline": to_json(e.headline) if e else None, "gate_passed": e.passed if e else None,
                "aliases": self.aliases}


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str
    sha256: str
    bytes: int | None
    format: str | None


@dataclass(frozen=True)
class SnapshotInfo:
    """The dataset snapshot a version trained on, from its manifest."""

    id: str
    created: float = _time()
    path: Path | None = None
    config_hash: str | None = None
    sources: list[SourceFile] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)  # read, kept, dropped, quarantined, ...
    pii: dict[str, Any] = field(default_factory=dict)  # the data.pii settings it was scrubbed with
    contamination: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingRun:
    run_dir: Path | None
    run_key: str | None
    config_hash: str | None
    seed: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the model + train config it ran with


@dataclass(frozen=True)
class AliasMove:
    """One row of the append-only alias ledger."""

    seq: int
    at: float = _time()
    by: str = ""
    alias: str = ""
    from_model: str | None = None
    to_model: str = ""
    action: str = "promote"  # promote | rollback
    reason: str | None = None
    forced: bool = False
    gate_eval: str | None = None
    gate_pack: str | None = None
    gate_passed: bool | None = None


@dataclass(frozen=True)
class ExportInfo:
    """One published export of a version (``tunesmith export``): its formats and files."""

    export_id: str
    created: float = _time()
    path: Path | None = None
    formats: list[str] = field(default_factory=list)  # hf_safetensors, gguf_<dtype>
    files: list[dict[str, Any]] = field(default_factory=list)  # {"path", "bytes", "sha256"}
    gguf: str | None = None  # the GGUF file's name, None when none was written
    gguf_skipped: str | None = None  # why not, when ``--gguf auto`` skipped it
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionDetail:
    """``tunesmith models show``: the whole chain, source files → ... → every alias move."""

    version: VersionSummary
    path: Path
    base_fingerprint: str | None
    tunesmith_version: str | None
    snapshot: SnapshotInfo | None
    training: TrainingRun
    evals: dict[str, list[EvalSummary]]  # pack id -> evals of this version on it, oldest first
    alias_moves: list[AliasMove]
    exports: list[ExportInfo] = field(default_factory=list)  # oldest first


@dataclass(frozen=True)
class MirrorResult:
    """What the MLflow registry mirror did (or why it could not)."""

    registered_model: str | None = None
    tracking_uri: str | None = None
    versions: dict[str, int] = field(default_factory=dict)  # tunesmith id -> MLflow version
    aliases: dict[str, int] = field(default_factory=dict)  # alias -> MLflow version
    error: str | None = None


@dataclass(frozen=True)
class AliasChange:
    """The outcome of ``promote`` or ``rollback``. ``move`` is None when the alias already
    pointed at the version (nothing was written)."""

    alias: str
    model_id: str
    previous: str | None
    move: AliasMove | None
    gate: GateVerdict | None = None
    mlflow: MirrorResult | None = None

    @property
    def changed(self) -> bool:
        return self.move is not None
