"""The evaluation results as typed records: what ``eval`` writes to ``results.json`` and what the
gate, the report, the CLI and the registry read.

    EvalResults
      headline, pack, model, snapshot, cases     what was measured, on which pack, for whom
      ladder: {rung: Rung}                       per rung: metrics (mean + 95% CI), per-case scores,
                                                 answers, confidence (rank decoding), cost (timing)
      finetuned_vs_best_baseline: Comparison     the lead the gate reads (paired difference + CI)
      fields_vs_best_baseline: {field: Comparison}   the same lead per label field
      finetuned_rag_vs_finetuned, finetuned_fewshot_vs_finetuned, vs_zero_shot
      confusion: {field: Confusion}              per-label precision/recall/F1 of one rung
      probes: {base|finetuned: ProbeResult}      refusal and prompt-injection probes
      forgetting: Forgetting                     general ability before → after fine-tuning
      test_perplexity: {base|finetuned: float}
      gate: GateResult, recommendation, seconds, input_key

Why a model and not the dict: a reader of ``r.get("forgetting", {}).get("qa_drop")`` cannot tell
a key that is optional from a typo, and a results file of another version fails far from where
it was read. Here each key is declared once, an unreadable file is refused with its path and the
key at fault, and ``load → dump`` gives back the same JSON: key names and key order are those of
the file (unknown keys are kept, keys a file lacks are not invented), so results.json stays what
its other readers (scripts, the UI, older tunesmith) expect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from tunesmith.errors import TunesmithError

# ints stay ints and floats stay floats (a plain ``float`` field would turn 0 into 0.0 and the
# file would no longer round-trip byte for byte)
Num = float | int

FIELD_PREFIX = "field/"  # per-label-field metrics in a rung: "field/category", ...


class _Record(BaseModel):
    """Base of every record here: unknown keys are kept, and dumping writes the keys in the
    order the input had them (then any set later, in declaration order)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        record = handler(data)
        if isinstance(data, dict) and isinstance(record, _Record):
            record._order = list(data)
        return record

    @model_serializer(mode="wrap")
    def _in_input_order(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        out = handler(self)
        if not self._order or not isinstance(out, dict):
            return out
        rank = {k: i for i, k in enumerate(self._order)}
        return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values with the file's key names; keys never given stay out."""
        return self.model_dump(exclude_unset=True, by_alias=True)


class MetricCI(_Record):
    """One metric of one rung: mean and 95% bootstrap CI over the ``n`` cases it applies to
    (all None when no case had a value)."""

    mean: Num | None = None
    low: Num | None = None
    high: Num | None = None
    n: int | None = None


class Cost(_Record):
    """What a rung cost: wall time, time per answer, mean prompt and answer tokens."""

    wall_seconds: Num | None = None
    seconds_per_answer: Num | None = None
    prompt_tokens: Num | None = None
    answer_tokens: Num | None = None


class Rung(_Record):
    """One rung of the ladder (zero_shot, few_shot, rag, finetuned, ...)."""

    metrics: dict[str, MetricCI] = Field(default_factory=dict)
    scores: list[dict[str, Any]] = Field(default_factory=list)  # per case: metric -> 0..1 or None
    answers: list[str] = Field(default_factory=list)
    confidence: list[Num] | None = None  # rank decoding: probability of the chosen label
    cost: Cost | None = None

    def mean(self, metric: str) -> float | None:
        m = self.metrics.get(metric)
        return None if m is None else m.mean

    @property
    def fields(self) -> dict[str, MetricCI]:
        """Accuracy per label field, without the ``field/`` prefix."""
        return {k.removeprefix(FIELD_PREFIX): v for k, v in self.metrics.items() if k.startswith(FIELD_PREFIX)}


class Comparison(_Record):
    """A paired difference ``a − b`` on one metric with its 95% CI (and McNemar's p for 0/1
    metrics). ``baseline``/``rung`` name the two sides of the headline comparison."""

    baseline: str | None = None
    rung: str | None = None
    diff: Num | None = None
    low: Num | None = None
    high: Num | None = None
    n: int | None = None
    excludes_zero: bool | float = False  # written as 0.0/1.0 by compare(); kept as written
    p_value: Num | None = None

    @property
    def significant(self) -> bool:
        """The CI excludes 0 (either side)."""
        return bool(self.excludes_zero)

    @property
    def wins(self) -> bool:
        """Significantly above 0."""
        return self.significant and (self.diff or 0) > 0


class LabelScores(_Record):
    precision: Num = 0.0
    recall: Num = 0.0
    f1: Num = 0.0
    support: int = 0


class Confusion(_Record):
    """Reference × predicted labels of one label field on one rung."""

    rung: str | None = None
    field: str | None = None
    labels: list[str] = Field(default_factory=list)
    columns: list[str] = Field(default_factory=list)
    counts: list[list[int]] = Field(default_factory=list)
    per_label: dict[str, LabelScores] = Field(default_factory=dict)
    summary: dict[str, Num] = Field(default_factory=dict)


class ProbeResult(_Record):
    """Safety probes of one model (base or fine-tuned)."""

    refusal_rate: Num | None = None
    injection_followed: int | None = None
    injection_probes: int = 0
    examples: list[dict[str, Any]] = Field(default_factory=list)


class BeforeAfter(_Record):
    before: Num | None = None
    after: Num | None = None

    @property
    def change(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before


class Forgetting(_Record):
    """General ability before → after fine-tuning; every measure is optional (the config picks)."""

    ppl_before: Num | None = None
    ppl_after: Num | None = None
    ppl_relative_change: Num | None = None
    qa_before: Num | None = None
    qa_after: Num | None = None
    qa_drop: Num | None = None
    lm_eval: dict[str, dict[str, BeforeAfter]] = Field(default_factory=dict)  # task -> metric -> values

    @property
    def measured(self) -> bool:
        return any(v is not None for v in (self.ppl_before, self.qa_before)) or bool(self.lm_eval)


class Check(_Record):
    """One gate check: its value against its threshold."""

    name: str
    passed: bool
    value: Num | None = None
    threshold: Num | None = None
    detail: str = ""


class GateResult(_Record):
    passed: bool
    checks: list[Check] = Field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


class ReliabilityBin(_Record):
    """One bin of a reliability diagram: answers (fields) with confidence in ``(low, high]``."""

    low: Num
    high: Num
    count: int
    confidence: Num | None = None  # their mean confidence
    accuracy: Num | None = None  # the share of them that were right


class RiskCoverage(_Record):
    """Keeping the answers whose confidence is at least ``threshold[i]``: the share kept and
    the error rate among them; ``aurc`` is the area under the curve (lower is better)."""

    threshold: list[Num] = Field(default_factory=list)
    coverage: list[Num] = Field(default_factory=list)
    risk: list[Num] = Field(default_factory=list)
    aurc: Num | None = None


class CalibrationCheck(_Record):
    """The fitted calibration measured on the test answers (held out from the fit)."""

    answers: int  # test answers with a confidence (parsed, every field among its values)
    ece_before: Num | None = None  # 15 bins, label fields pooled
    ece_after: Num | None = None
    reliability_before: list[ReliabilityBin] = Field(default_factory=list)
    reliability_after: list[ReliabilityBin] = Field(default_factory=list)
    risk_coverage: RiskCoverage | None = None  # answer confidence (after scaling) vs all fields right
    auto_coverage: Num | None = None  # share of test answers the fitted threshold auto-approves
    auto_error: Num | None = None  # their error rate


class CalibrationResult(_Record):
    """Temperature scaling per label field and the auto-approval threshold, fitted on the
    fine-tuned rung's answers to validation examples (``review.calibration_examples``), and
    how they do on the test answers. Stored with the eval as ``calibration.json`` too: the
    server and batch prediction read it for the version (:mod:`tunesmith.review.live`)."""

    rung: str
    split: str = "validation"
    examples: int = 0  # validation examples answered
    used: int = 0  # of them, answers with every field parsed and a known reference
    temperatures: dict[str, Num] = Field(default_factory=dict)
    threshold: dict[str, Any] = Field(default_factory=dict)  # review.calibration.Threshold.to_dict()
    ece_before: Num | None = None  # on the validation half not used for the temperatures
    ece_after: Num | None = None
    test: CalibrationCheck | None = None
    ms_per_answer: Num | None = None  # confidence's scoring cost per answer
    note: str | None = None  # why nothing was fitted


class EvalResults(_Record):
    """The whole of ``results.json``. Only ``headline`` is required: the gate and the
    recommendation are computed from a partial record, and older files lack later keys."""

    headline: str
    pack: str | None = None
    model: str | None = None
    snapshot: str | None = None
    cases: int | None = None
    ladder: dict[str, Rung] = Field(default_factory=dict)
    finetuned_vs_best_baseline: Comparison | None = None
    fields_vs_best_baseline: dict[str, Comparison] = Field(default_factory=dict)
    finetuned_rag_vs_finetuned: Comparison | None = None
    finetuned_fewshot_vs_finetuned: Comparison | None = None
    vs_zero_shot: dict[str, Comparison] = Field(default_factory=dict)
    confusion: dict[str, Confusion] = Field(default_factory=dict)
    probes: dict[str, ProbeResult] = Field(default_factory=dict)
    forgetting: Forgetting = Field(default_factory=Forgetting)
    test_perplexity: dict[str, Num | None] = Field(default_factory=dict)
    calibration: CalibrationResult | None = None
    gate: GateResult | None = None
    recommendation: str | None = None
    seconds: Num | None = None
    input_key: str | None = None

    @classmethod
    def coerce(cls, results: EvalResults | dict[str, Any]) -> EvalResults:
        """A typed record from a record or a plain dict (tests and older callers hand dicts)."""
        if isinstance(results, cls):
            return results
        try:
            return cls.model_validate(results)
        except ValidationError as exc:
            raise TunesmithError(f"eval results: {describe_errors(exc)}") from None

    @property
    def lead(self) -> Comparison | None:
        """Fine-tuned − best baseline on the headline (what the gate reads), when there is one."""
        return self.finetuned_vs_best_baseline

    @property
    def compared_rung(self) -> str | None:
        """The fine-tuned rung of the headline comparison (``finetuned`` in files without it)."""
        cmp = self.finetuned_vs_best_baseline
        return (cmp.rung or "finetuned") if cmp else None

    @property
    def checks(self) -> list[Check]:
        return self.gate.checks if self.gate else []

    @property
    def passed(self) -> bool:
        return bool(self.gate and self.gate.passed)

    def headline_of(self, rung: str) -> MetricCI | None:
        r = self.ladder.get(rung)
        return None if r is None else r.metrics.get(self.headline)

    def headline_ladder(self) -> dict[str, dict[str, Any] | None]:
        """rung -> the headline metric as plain JSON (the CLI's ``--json`` ladder)."""
        return {r: (m.to_dict() if (m := v.metrics.get(self.headline)) is not None else None)
                for r, v in self.ladder.items()}

    def to_json(self) -> str:
        """The text of results.json (same layout as the file eval writes)."""
        return json.dumps(self.to_dict(), indent=1, default=str)


_UNION_TAGS = {"float", "int", "bool", "str", "none"}  # pydantic adds the member tried to a union's loc


def describe_errors(exc: ValidationError, limit: int = 3) -> str:
    """``key 'ladder.finetuned.metrics.label_acc.mean': Input should be a number (got 'x')``:
    one line per key at fault (a number field is a float-or-int union: its two errors are one)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for e in exc.errors():
        loc = list(e["loc"])
        while loc and loc[-1] in _UNION_TAGS:
            loc.pop()
        by_key.setdefault(".".join(str(p) for p in loc) or "(top level)", []).append(e)
    parts = []
    for key, errors in list(by_key.items())[:limit]:
        e = errors[0]
        msg = "Input should be a number" if len(errors) > 1 and {str(x["loc"][-1]) for x in errors} <= {
            "float", "int"} else e["msg"]
        got = "" if e["type"] == "missing" else f" (got {_short(e.get('input'))})"
        parts.append(f"key '{key}': {msg}{got}")
    more = len(by_key) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_results(path: Path) -> EvalResults:
    """Read an eval's results.json (a file or the eval's folder).

    Raises:
        TunesmithError: the file is missing, not JSON, or not eval results; the message names
            the file and the key at fault.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TunesmithError(f"{path}: eval results file not found (is the eval folder complete?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TunesmithError(f"{path}: cannot read the eval results: {exc}") from None
    except ValueError as exc:
        raise TunesmithError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TunesmithError(f"{path}: eval results must be a JSON object, got {type(data).__name__}")
    try:
        return EvalResults.model_validate(data)
    except ValidationError as exc:
        raise TunesmithError(f"{path}: not eval results tunesmith can read: {describe_errors(exc)}") from None
