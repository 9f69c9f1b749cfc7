"""``tunesmith demo --operate``: the support-triage project's second month, simulated.

After the demo has trained and evaluated its version, one function runs the operate loop on
it, offline, with the project's own stages:

1. the demo's version becomes ``champion`` (the registry's gated promote); its confidence
   calibration is the one its eval fitted (fitted now on the fine-tuned rung if the eval
   predates calibration);
2. the server (``serve.launch.build_app``) runs on 127.0.0.1 and month-1 traffic is replayed
   through it over HTTP (new tickets of the training data's distribution); ``review enqueue``;
   the simulated reviewer decides the queue; ``monitor`` (expected: no alarm);
3. month-2 traffic (a shorter refund window, new known issues, a new product line:
   :mod:`tunesmith.sample.triage_month2`) is replayed; enqueue, review, ``monitor`` (expected:
   drift and quality alarms);
4. ``review export`` → ``retrain`` (from the champion's weights) → the challenger in shadow
   (fresh month-2 tickets answered by both), then a canary share → ``rollout promote``.

Nothing here is measured on real customers. The reviewer is **simulated**: it answers each
queued item with the generator's ground truth (audit rows ``by: simulated reviewer``); every
line printed says ``[simulation]``. What is real: the model, the server, the routing, the
queue and its audit trail, the monitor's statistics, the retraining and the gates.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import Config
from tunesmith.errors import TunesmithError
from tunesmith.sample.operate_serve import (
    FIELDS,
    LocalServer,
    Served,
    parse_fields,
    replay,
    shadow_answers,
    wait_for_shadows,
)
from tunesmith.sample.triage_month2 import TrafficTicket, month_summary, month_traffic, write_month

TAG = "[simulation]"
REVIEWER = "simulated reviewer"  # the audit rows' `by`: never a person
OPERATOR = "tunesmith demo --operate (simulation)"
REVIEW_RULES = [{"category": "security"}, {"urgency": "critical"}]  # used when the project sets none
CALIBRATION_EXAMPLES = 1000  # more than the sample's validation split: all of it
OPERATING_COVERAGE = 0.5  # without a certified threshold: the share of held-out answers auto-approved
PHASE1_RISE = 0.15  # ... and the rise of their error rate the quality chart is tuned to detect
FROZEN_CASES = 2000  # more than the sample's test split: all of it
Say = Callable[[str], None]


@dataclass
class OperatePlan:
    """How much traffic each phase replays, and the retrain's budget.

    The defaults (500 + 500 + 150 + 100 requests) ran the loop to a promotion in 31.1 min on a
    2-core CPU after the demo (idle, float32, 2026-12-04 evening; 51.4 min that day on a
    workspace whose old config pinned bf16), with the 1,000-case frozen pack (docs/operate.md).
    """

    month1: int = 500  # month-1 requests (one monitor window)
    month2: int = 500  # month-2 requests (one monitor window)
    shadow: int = 150  # fresh month-2 requests during the shadow phase (answered by both versions)
    canary: int = 100  # fresh month-2 requests during the canary phase
    canary_share: float = 0.5
    concurrency: int = 32  # clients in flight: the demo's generation batch (8 took 0.75 s a request, 32 0.56)
    seed: int = 11  # traffic seed (the demo's sample data has its own)
    sample_rate: float = 0.5  # quality-control share of auto-approved answers (a month must feed the chart)
    window: int = 500  # monitor window
    embedder: str | None = None  # monitor.embedder override (None: the project's)
    start: str = "champion"  # retrain from the champion's weights (or: base)
    retrain_steps: int = 150  # ~2 passes over the corrections + as much rehearsal (60 at 3e-4 learnt nothing new)
    retrain_lr: float = 3e-4  # 6e-4 failed the frozen pack's next_action margin (docs/operate.md)
    max_tokens: int = 32
    frozen_extra: int = 724  # labelled month-1 tickets added to the frozen pack: 1,000 cases with the test
    # split's 276 (at 576 the category check missed the 2-point margin by 0.1 point: docs/operate.md, "The retrain")


@dataclass
class OperateResult:
    plan: dict[str, Any]
    champion: str = ""
    challenger: str | None = None
    promoted: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    traffic: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)  # phase -> per-field accuracy
    routing: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    review: dict[str, Any] = field(default_factory=dict)
    monitor: dict[str, Any] = field(default_factory=dict)
    retrain: dict[str, Any] = field(default_factory=dict)
    rollout: dict[str, Any] = field(default_factory=dict)
    before_after: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"simulation": True, "reviewer": REVIEWER, **asdict(self)}


# ---------------------------------------------------------------------------- config
def operate_config(cfg: Config, plan: OperatePlan) -> Config:
    """The project's config with the simulation's settings: review rules (when the project has
    none), its sample rate, the monitor window, and the retrain's training budget."""
    new = cfg.model_copy(deep=True)
    new._base_dir = cfg.base_dir
    new.review.rules = cfg.review.rules or [dict(r) for r in REVIEW_RULES]
    new.review.sample_rate = plan.sample_rate
    new.monitor.window = plan.window
    new.monitor.min_requests = min(new.monitor.min_requests, plan.window)
    if plan.embedder:
        new.monitor.embedder = plan.embedder  # type: ignore[assignment]
    new.retrain.start = plan.start  # type: ignore[assignment]
    new.train.max_steps = plan.retrain_steps
    new.train.eval_every = plan.retrain_steps
    new.train.save_every = plan.retrain_steps
    new.train.lr = plan.retrain_lr
    new.serve.rollout.mode = "off"
    new.serve.rollout.promote_after = None
    return new


# ---------------------------------------------------------------------------- figures
def accuracy(served: list[Served]) -> dict[str, float | int]:
    """Per field, fields_mean and exact match of answers against the ground truth."""
    if not served:
        return {"answers": 0}
    out: dict[str, float | int] = {"answers": len(served)}
    for name in FIELDS:
        out[name] = round(float(np.mean([s.right(name) for s in served])), 4)
    out["fields_mean"] = round(float(np.mean([s.score for s in served])), 4)
    out["exact"] = round(float(np.mean([s.exact for s in served])), 4)
    return out


def routing_figures(served: list[Served], target_error: float, sample_rate: float) -> dict[str, Any]:
    """Tiers, the auto-approved answers' realised error (any field wrong) and coverage, and the
    sampled tier's share of them, against the ground truth."""
    tiers = Counter(s.decision or "none" for s in served)
    approved = [s for s in served if s.decision in ("auto", "sampled")]
    errors = sum(not s.exact for s in approved)
    from tunesmith.evaluate.stats import wilson_ci

    ci = wilson_ci(errors, len(approved)) if approved else None
    return {"answers": len(served), "tiers": dict(tiers), "threshold": next((s.threshold for s in served), None),
            "auto_approved": len(approved), "coverage": round(len(approved) / len(served), 4) if served else None,
            "auto_error": round(errors / len(approved), 4) if approved else None,
            "auto_error_ci": [round(ci.low, 4), round(ci.high, 4)] if ci else None,
            "target_error": target_error,
            "sampled_share": round(tiers.get("sampled", 0) / len(approved), 4) if approved else None,
            "sample_rate": sample_rate,
            "mandatory_routed": _mandatory_share(served)}


def _mandatory_share(served: list[Served]) -> float | None:
    """Share of answers matching a mandatory rule (security or critical) that went to review."""
    hit = [s for s in served if s.fields.get("category") == "security" or s.fields.get("urgency") == "critical"]
    return round(sum(s.decision == "mandatory" for s in hit) / len(hit), 4) if hit else None


def served_ece(served: list[Served]) -> dict[str, Any]:
    """ECE (15 bins) of the served per-field confidences against the ground truth."""
    from tunesmith.review.calibration import expected_calibration_error

    conf, right = [], []
    for s in served:
        for name in FIELDS:
            c = s.field_confidence.get(name)
            if c is not None and s.fields.get(name) is not None:
                conf.append(c)
                right.append(s.right(name))
    if not conf:
        return {"field_answers": 0}
    return {"field_answers": len(conf), "answers": len(served),
            "ece": round(expected_calibration_error(np.array(conf), np.array(right)), 4),
            "mean_confidence": round(float(np.mean(conf)), 4), "accuracy": round(float(np.mean(right)), 4)}


def paired_table(champion: list[Served], challenger: dict[str, str], *, seed: int) -> dict[str, Any]:
    """Champion vs challenger on the same tickets (the shadow phase): per field and fields_mean,
    the challenger − champion difference with its paired bootstrap 95% CI."""
    from tunesmith.evaluate.stats import paired_difference_ci

    pairs = [(s, parse_fields(challenger[s.request_id])) for s in champion if s.request_id in challenger]
    if not pairs:
        return {"tickets": 0}
    out: dict[str, Any] = {"tickets": len(pairs)}
    metrics = {n: (lambda s, f, n=n: float(s.right(n)), lambda s, f, n=n: float(f.get(n) == getattr(s.ticket.truth, n)))
               for n in FIELDS}
    metrics["fields_mean"] = (lambda s, f: s.score,
                              lambda s, f: sum(f.get(n) == getattr(s.ticket.truth, n) for n in FIELDS) / 3)
    for name, (old, new) in metrics.items():
        a = np.array([new(s, f) for s, f in pairs])
        b = np.array([old(s, f) for s, f in pairs])
        ci = paired_difference_ci(a, b, seed=seed)
        out[name] = {"champion": round(float(b.mean()), 4), "challenger": round(float(a.mean()), 4),
                     "diff": round(float(a.mean() - b.mean()), 4), "low": round(ci.low, 4), "high": round(ci.high, 4)}
    return out


def offline_table(cfg: Config, champion: str, challenger: str, tickets: list[TrafficTicket],
                  frozen_pack: str) -> dict[str, Any]:
    """Champion vs a challenger that never went live, on fresh month-2 tickets scored against the
    generator's ground truth: both versions answer offline (the retrain's comparison engine, the
    frozen pack's output settings). The month-2 before/after when the gate refused a rollout."""
    from tunesmith.data.example import Example
    from tunesmith.evaluate.pack import EvalPack, load_pack
    from tunesmith.retrain import compare
    from tunesmith.workspace import Workspace

    ws = Workspace(cfg.workspace_dir)
    settings = load_pack(ws, frozen_pack).settings
    cases = [Example(t.ticket_id, t.labelled_messages(), None, {"simulation": True}) for t in tickets]
    pack = EvalPack("simulation-month2-fresh", None, cases, [], [], [], settings)
    engine = compare.load_engine(cfg, ws.get("model", champion), ws.get("model", challenger))
    cmp = compare.compare_on(engine, cfg, pack, "month2_fresh", lambda e: None)
    return {"tickets": len(cases), **_side(cmp)["rows"]}


# ---------------------------------------------------------------------------- the simulated reviewer
def simulated_review(cfg: Config, tickets: dict[str, TrafficTicket]) -> dict[str, Any]:
    """Decide every pending queue item of the simulation's requests from the ground truth:
    approve a right answer, correct the wrong fields of a wrong one (reason ``policy_change``
    when the month-2 policy or the new product moved the label, else ``wrong_label``). Audit
    rows say ``by: simulated reviewer``."""
    from tunesmith.review.project import decide, queue

    tally: Counter[str] = Counter()
    errors_by_tier: Counter[str] = Counter()
    for item in queue(cfg).items(status="pending"):
        ticket = tickets.get(item.request_id)
        if ticket is None:
            tally["not_ours"] += 1
            continue
        truth = ticket.truth.as_dict()
        given = {name: f.value for name, f in item.fields.items()}
        changes = {k: v for k, v in truth.items() if k in given and given[k] != v}
        if not changes:
            decide(cfg, str(item.item), "approve", by=REVIEWER)
            tally["approve"] += 1
        else:
            reason = "policy_change" if ticket.month == 2 and ticket.truth != ticket.month_one else "wrong_label"
            decide(cfg, str(item.item), "correct", by=REVIEWER, changes=changes, reason=reason)
            tally["correct"] += 1
            errors_by_tier[item.tier] += 1
        tally[f"tier:{item.tier}"] += 1
    return {"decisions": dict(tally), "errors_by_tier": dict(errors_by_tier)}


# ---------------------------------------------------------------------------- the monitor
def monitor_summary(cfg: Config) -> dict[str, Any]:
    from tunesmith.monitor.runner import run_monitor

    report = run_monitor(cfg, window=cfg.monitor.window, reference="snapshot")
    findings = {f.check: {"alarm": f.alarm, "p_value": _round(getattr(f, "p_value", None)),
                          "effect": _round(getattr(f, "effect", None))} for f in report.findings}
    quality = None
    if report.quality is not None:
        q = report.quality
        quality = {"alarm": q.alarm, "reviewed_sampled": q.reviewed, "statistic": round(q.statistic, 3),
                   "alarms_at": q.alarms, "h": q.design.get("h"), "p0": _round(q.design.get("p0")),
                   "chart": q.chart_text,
                   "tiers": {k: {"n": getattr(r, "n", None), "rate": _round(getattr(r, "rate", None))}
                             for k, r in q.tiers.items()},
                   "fields": {k: {"n": r.n, "rate": _round(r.rate)} for k, r in q.fields.items()}, "note": q.note,
                   "field_alarms": q.field_alarms,
                   "traffic": {k: {"previous": _round(f.previous.rate if f.previous else None),
                                   "current": _round(f.current.rate), "rise": _round(f.rise),
                                   "p_value": _round(f.p_value), "alarm": f.alarm}
                               for k, f in q.traffic.items()}}
    return {"alarm": report.alarm, "window": report.current, "n_current": report.n_current,
            "reference": report.reference, "embedder": report.embedder,
            "drift_alarms": [f.check for f in report.findings if f.alarm], "findings": findings,
            "quality": quality, "recorded": [a.kind for a in report.alarms]}


def _round(x: Any) -> Any:
    return round(float(x), 6) if isinstance(x, int | float) else x


# ---------------------------------------------------------------------------- steps
def _champion(cfg: Config, say: Say) -> str:
    """The demo's latest version as ``champion`` (gated: its eval must have passed)."""
    from tunesmith.registry import ModelRegistry

    registry = ModelRegistry.from_config(cfg)
    current = registry.aliases().get("champion")
    if current:
        say(f"{TAG} champion: {current[:12]} (already promoted)")
        return current
    versions = registry.versions()
    if not versions:
        raise TunesmithError("no model version in the workspace: run `tunesmith demo` first")
    version = versions[-1].id
    registry.promote(version, "champion", reason="tunesmith demo --operate: the demo's version", by=OPERATOR)
    say(f"{TAG} champion: {version[:12]} promoted (its eval gate passed)")
    return version


def write_frozen_extra(path: Path, n: int, seed: int) -> Path | None:
    """``n`` fresh month-1 tickets with their ground truth as chat records (system, ticket, the
    label as the answer), for the frozen pack's ``eval.extra_cases``; other customers and
    tickets than the replayed month 1 (another seed)."""
    if n <= 0:
        return None
    tickets = month_traffic(1, n, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": t.ticket_id, "messages": t.labelled_messages()}, ensure_ascii=False) for t in tickets]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return path


def _calibration(cfg: Config, champion: str, say: Say, extra: Path | None = None) -> dict[str, Any]:
    """The champion's stored calibration; fitted now (the fine-tuned rung alone) when its eval
    predates calibration, on a frozen pack of the test split plus ``extra`` labelled month-1
    tickets."""
    from tunesmith.review.live import version_calibration
    from tunesmith.workspace import Workspace

    ws = Workspace(cfg.workspace_dir)
    if version_calibration(ws, champion) is None:
        from tunesmith.evaluate.runner import evaluate

        say(f"{TAG} the champion's eval has no confidence calibration: fitting it (fine-tuned rung only)")
        calib = cfg.model_copy(deep=True)
        calib._base_dir = cfg.base_dir
        calib.eval.rungs = ["finetuned"]
        # A frozen month-1 pack of the whole test split (the demo's has 100 cases): the check of
        # the calibration gets ~270 held-out answers (with the ~270 validation ones: the
        # acceptance's 500), and the retrain's per-field non-inferiority (2 points) a pack on
        # which it can be decided. The retrain compares on this pack (simulate pins it).
        calib.eval.pack = None
        calib.eval.max_cases = FROZEN_CASES
        calib.eval.extra_cases = [*calib.eval.extra_cases, *([str(extra)] if extra else [])]
        calib.eval.probes = False
        calib.eval.forgetting = False
        calib.eval.test_perplexity = False  # two scoring passes over the pack (~5 min), for the report only
        # the demo's config leaves calibration to this step (review.calibration_examples: 0
        # keeps the demo inside 15 minutes); routing needs it, so fit it on the whole validation
        # split (~270 answers: the threshold is certified on half of them)
        if calib.review.calibration_examples == 0:
            calib.review.calibration_examples = CALIBRATION_EXAMPLES
        shown = ("eval_start", "rung_done", "calibration_start", "calibration_done")
        evaluate(calib, model=champion, reuse=True,
                 log=lambda e: say(f"{TAG} calibration eval: {e}") if e.get("event") in shown else None)
    for art in reversed(ws.list("eval")):
        if art.meta.get("model") != champion or not (art.path / "results.json").exists():
            continue
        section = json.loads((art.path / "results.json").read_text()).get("calibration") or {}
        if section.get("temperatures"):
            test = section.get("test") or {}
            return {"eval": art.id, "pack": art.meta.get("pack"), "examples": section.get("examples"),
                    "temperatures": section.get("temperatures"),
                    "threshold": (section.get("threshold") or {}).get("threshold"),
                    "validation_ece_before": section.get("ece_before"), "validation_ece_after": section.get("ece_after"),
                    "test_answers": test.get("answers"), "test_ece_before": test.get("ece_before"),
                    "test_ece_after": test.get("ece_after"), "test_auto_coverage": test.get("auto_coverage"),
                    "test_auto_error": test.get("auto_error"),
                    "risk_coverage": test.get("risk_coverage")}
    return {"note": "no calibration could be fitted (see the eval's calibration section)"}


def operating_point(cfg: Config, result: OperateResult, plan: OperatePlan, say: Say) -> None:
    """When the calibration certified no threshold for ``review.target_error`` (and the project
    fixes none), every answer but the mandatory ones would go to review as ``low_confidence``
    and the sampled tier the quality chart watches would stay empty. The simulation then runs
    at a stated operating point instead: ``review.threshold`` = the confidence at which half of
    the held-out test answers are auto-approved. The quality chart's in-control error is then
    not the target's: it is estimated from month 1's sampled reviews (a Phase-I chart,
    ``monitor.quality.phase1``, tuned to detect a 15-point rise), because live traffic need not
    err as the test split does (the tenth run's auto-approved answers: 37% wrong on the test
    split, 51% in month 1). Printed and recorded in the result; the project's config is not
    changed."""
    cal = result.calibration
    if cal.get("threshold") is not None or cfg.review.threshold is not None:
        return
    curve = cal.get("risk_coverage") or {}
    points = [(t, c, r) for t, c, r in zip(curve.get("threshold", []), curve.get("coverage", []),
                                           curve.get("risk", []), strict=False) if c >= OPERATING_COVERAGE]
    if not points:
        return
    threshold, coverage, risk = points[0]
    cfg.review.threshold = round(float(threshold), 4)
    q = cfg.monitor.quality
    q.baseline_error = q.alarm_error = None
    q.phase1 = phase1_reviews(plan)
    q.alarm_rise = PHASE1_RISE
    result.routing["operating_point"] = {
        "why": f"no threshold certified for review.target_error {cfg.review.target_error}",
        "threshold": cfg.review.threshold, "test_coverage": round(coverage, 4), "test_error": round(risk, 4),
        "quality_phase1": q.phase1, "quality_alarm_rise": q.alarm_rise}
    say(f"{TAG} no auto-approval threshold is certified for review.target_error {cfg.review.target_error} "
        f"(this model's most confident answers still err too often); the simulation auto-approves at a stated "
        f"operating point instead: review.threshold {cfg.review.threshold} (held-out test answers: "
        f"{coverage:.0%} approved, {risk:.1%} of them wrong); the quality chart's in-control error is estimated "
        f"from the first {q.phase1} sampled reviews (Phase I, month 1), tuned to detect a rise of "
        f"{q.alarm_rise:.0%}")


def phase1_reviews(plan: OperatePlan) -> int:
    """The Phase I of the simulation's quality chart: most of the sampled reviews month 1 is
    expected to give (its requests x the auto-approved share x the sample rate), at least 20."""
    return max(20, int(0.8 * plan.month1 * OPERATING_COVERAGE * plan.sample_rate))


def _phase(server: LocalServer, cfg: Config, tickets: list[TrafficTicket], plan: OperatePlan, name: str,
           say: Say, result: OperateResult) -> list[Served]:
    t0 = time.perf_counter()
    served = replay(server, cfg, tickets, concurrency=plan.concurrency, max_tokens=plan.max_tokens)
    result.seconds[name] = round(time.perf_counter() - t0, 1)
    result.accuracy[name] = accuracy(served)
    say(f"{TAG} {name}: {len(served)} requests in {result.seconds[name]} s "
        f"({result.seconds[name] / max(1, len(served)):.2f} s each); fields_mean "
        f"{result.accuracy[name].get('fields_mean')}")
    return served


def _review_and_monitor(cfg: Config, tickets: dict[str, TrafficTicket], name: str, say: Say,
                        result: OperateResult) -> None:
    from tunesmith.monitor.traffic import NotEnoughTraffic
    from tunesmith.review.project import enqueue

    t0 = time.perf_counter()
    queued = enqueue(cfg).to_dict()
    decided = simulated_review(cfg, tickets)
    result.review[name] = {"enqueue": queued, **decided}
    say(f"{TAG} review enqueue: {queued}")
    say(f"{TAG} simulated reviewer (ground truth): {decided['decisions']}")
    try:
        result.monitor[name] = monitor_summary(cfg)
    except NotEnoughTraffic as exc:
        result.monitor[name] = {"note": str(exc)}
    m = result.monitor[name]
    q = m.get("quality") or {}
    say(f"{TAG} monitor after {name}: alarm {m.get('alarm')}; drift alarms {m.get('drift_alarms')}; "
        f"quality alarm {q.get('alarm')} ({q.get('chart')}, "
        f"{q.get('reviewed_sampled')} sampled answers reviewed); whole-traffic error rose in "
        f"{q.get('field_alarms') or 'no field'}")
    result.seconds[f"review+monitor {name}"] = round(time.perf_counter() - t0, 1)


def simulate(cfg: Config, plan: OperatePlan | None = None, *, say: Say | None = None,
             out_dir: Path | None = None) -> OperateResult:
    """Run the simulated second month on a project whose demo has run (see the module docstring).

    Args:
        cfg: the support-triage project's config (its workspace holds the demo's version).
        plan: traffic counts and the retrain's budget.
        say: where progress lines go (each starts with ``[simulation]``).
        out_dir: where the months' requests, their ground truth and ``result.json`` are written
            (default ``<project>/operate``).

    Raises:
        TunesmithError: no model version, a gate refusing the demo's version, a failed request.
    """
    from tunesmith.retrain.run import retrain
    from tunesmith.serve.rollout_admin import promote_challenger, rollout_status, set_rollout

    plan = plan or OperatePlan()
    say = say or (lambda line: None)
    started = time.perf_counter()
    result = OperateResult(plan=asdict(plan))
    ocfg = operate_config(cfg, plan)
    out_dir = out_dir or cfg.base_dir / "operate"
    say(f"{TAG} SIMULATION: a second month of support traffic, generated; the reviewer is simulated from the "
        "generator's ground truth. Model, server, routing, queue, monitor and retraining are real.")
    # traffic: month 1 (no drift), month 2 (the change), then fresh month-2 tickets for shadow + canary
    m1 = month_traffic(1, plan.month1, seed=plan.seed)
    m2_all = month_traffic(2, plan.month2 + plan.shadow + plan.canary, seed=plan.seed)
    m2, shadow_t, canary_t = (m2_all[:plan.month2], m2_all[plan.month2:plan.month2 + plan.shadow],
                              m2_all[plan.month2 + plan.shadow:])
    write_month(out_dir / "month1", 1, plan.month1, seed=plan.seed)
    write_month(out_dir / "month2", 2, len(m2_all), seed=plan.seed)
    result.traffic = {"month1": month_summary(m1), "month2": month_summary(m2), "shadow": len(shadow_t),
                      "canary": len(canary_t), "files": str(out_dir)}
    say(f"{TAG} traffic: month 1 {result.traffic['month1']}; month 2 {result.traffic['month2']}")
    by_request: dict[str, TrafficTicket] = {}

    # 1. champion + calibration
    t0 = time.perf_counter()
    result.champion = _champion(ocfg, say)
    extra = write_frozen_extra(out_dir / "frozen" / "month1-labelled.jsonl", plan.frozen_extra, plan.seed + 1)
    result.calibration = _calibration(ocfg, result.champion, say, extra)
    result.seconds["champion+calibration"] = round(time.perf_counter() - t0, 1)
    shown = {k: v for k, v in result.calibration.items() if k != "risk_coverage"}
    say(f"{TAG} calibration (the eval's, validation fit / test check): {shown}")
    if result.calibration.get("pack"):  # the retrain's frozen month-1 pack: the one calibration was checked on
        ocfg.eval.pack = result.calibration["pack"]
    operating_point(ocfg, result, plan, say)

    # 2-3. serve the champion: month 1, then month 2
    with LocalServer(ocfg) as server:
        say(f"{TAG} serving {server.versions} on {server.url} (loaded in {server.load_seconds} s)")
        served1 = _phase(server, ocfg, m1, plan, "month1", say, result)
        by_request.update({s.request_id: s.ticket for s in served1})
        result.routing["month1"] = routing_figures(served1, ocfg.review.target_error, plan.sample_rate)
        result.calibration["served_month1"] = served_ece(served1)
        _review_and_monitor(ocfg, by_request, "month1", say, result)
        served2 = _phase(server, ocfg, m2, plan, "month2", say, result)
        by_request.update({s.request_id: s.ticket for s in served2})
        result.routing["month2"] = routing_figures(served2, ocfg.review.target_error, plan.sample_rate)
        result.calibration["served_month2"] = served_ece(served2)
        result.accuracy["month2_new_product"] = accuracy([s for s in served2 if s.ticket.new_product])
        result.accuracy["month2_policy_changed"] = accuracy([s for s in served2 if s.ticket.policy_changed])
        _review_and_monitor(ocfg, by_request, "month2", say, result)
    say(f"{TAG} routing month 1: {result.routing['month1']}")
    say(f"{TAG} routing month 2: {result.routing['month2']}")

    # 4. export + retrain
    from tunesmith.review.project import export

    t0 = time.perf_counter()
    exported = export(ocfg)
    result.review["export"] = exported.to_dict()
    say(f"{TAG} review export: {exported.to_dict().get('records')} records "
        f"(reviewset {exported.to_dict().get('id')})")
    outcome = retrain(ocfg, start=plan.start, rollout="shadow", by=OPERATOR,
                      log=lambda e: say(f"{TAG} retrain: {e.get('event')}") if e.get("event") else None)
    result.seconds["export+retrain"] = round(time.perf_counter() - t0, 1)
    result.challenger = outcome.challenger
    result.retrain = _retrain_summary(outcome)
    say(f"{TAG} retrain: challenger {str(outcome.challenger)[:12]}, gate "
        f"{'PASSED' if outcome.passed else 'REFUSED'} ({result.retrain['failed'] or 'every check passed'}); "
        f"{result.retrain['registration']}")
    if outcome.passed:
        _rollout(ocfg, plan, shadow_t, canary_t, by_request, say, result, rollout_status, set_rollout,
                 promote_challenger)
    else:
        result.notes.append("the retrain gate refused the challenger: no shadow, canary or promotion was run "
                            "(the simulation never forces a promotion)")
        if outcome.challenger:  # what it would have done: the fresh month-2 tickets, answered offline
            t0 = time.perf_counter()
            result.before_after["month2_offline"] = offline_table(ocfg, outcome.champion, outcome.challenger,
                                                                  shadow_t + canary_t, outcome.frozen_pack)
            result.seconds["month2_offline"] = round(time.perf_counter() - t0, 1)
    result.seconds["total"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
    return result


def _side(cmp: Any) -> dict[str, Any]:
    """One paired comparison (retrain/compare.PackComparison) as table rows: per field and the headline."""
    rows = {}
    for name, c in cmp.fields.items():
        metric = cmp.field_metric.get(name, name)
        rows[name] = {"champion": _round(cmp.champion.mean(metric)), "challenger": _round(cmp.challenger.mean(metric)),
                      "diff": _round(c.diff), "low": _round(c.low), "high": _round(c.high)}
    rows[cmp.headline] = {"champion": _round(cmp.champion.mean(cmp.headline)),
                          "challenger": _round(cmp.challenger.mean(cmp.headline)), "diff": _round(cmp.diff.diff),
                          "low": _round(cmp.diff.low), "high": _round(cmp.diff.high)}
    return {"pack": cmp.pack, "cases": cmp.cases, "rows": rows}


def _retrain_summary(outcome: Any) -> dict[str, Any]:
    return {"passed": outcome.passed, "challenger": outcome.challenger, "start": outcome.start,
            "checks": [{"name": c.name, "passed": c.passed, "detail": getattr(c, "detail", None)}
                       for c in outcome.checks],
            "failed": ", ".join(c.name for c in outcome.checks if not c.passed),
            "frozen": _side(outcome.frozen), "new_slice": _side(outcome.new_slice),
            "registration": outcome.registration, "seconds": outcome.seconds}


def _rollout(cfg: Config, plan: OperatePlan, shadow_t: list[TrafficTicket], canary_t: list[TrafficTicket],
             by_request: dict[str, TrafficTicket], say: Say, result: OperateResult, rollout_status: Any,
             set_rollout: Any, promote_challenger: Any) -> None:
    """The challenger in shadow (both answer fresh month-2 tickets), then a canary share, then
    the gated promotion."""
    with LocalServer(cfg) as server:
        say(f"{TAG} serving {server.versions} (rollout: shadow, set by retrain --rollout shadow)")
        # In chunks the shadow queue can hold, each chunk's copies answered before the next: shadow
        # work yields to client requests and a full queue drops copies (counted, by design).
        chunk = cfg.serve.rollout.shadow_queue
        served, answered, t0 = [], 0, time.perf_counter()
        for i in range(0, len(shadow_t), chunk):
            part = replay(server, cfg, shadow_t[i:i + chunk], concurrency=plan.concurrency,
                          max_tokens=plan.max_tokens)
            answered += wait_for_shadows(cfg, [s.request_id for s in part])
            served += part
        result.seconds["shadow"] = round(time.perf_counter() - t0, 1)
        result.accuracy["shadow"] = accuracy(served)
        status = rollout_status(cfg)
        result.rollout["shadow"] = {"copies_answered": answered, "agreement": status["agreement"].get("shadow"),
                                    "checks": status["checks"].get("shadow")}
        table = paired_table(served, shadow_answers(cfg, [s.request_id for s in served]), seed=cfg.seed)
        result.before_after["month2_shadow"] = table
        say(f"{TAG} shadow: {answered}/{len(served)} copies answered by the challenger; agreement "
            f"{_agreement_text(status['agreement'].get('shadow'))}")
        set_rollout(cfg, mode="canary", share=plan.canary_share, reason="simulation: shadow looked right",
                    by=OPERATOR)
        time.sleep(2.0)  # running servers pick rollout settings up within a second
        canary = _phase(server, cfg, canary_t, plan, "canary", say, result)
        by_variant: dict[str, list[Served]] = {}
        for s in canary:
            by_variant.setdefault(s.variant, []).append(s)
        status = rollout_status(cfg)
        result.rollout["canary"] = {"variants": {v: accuracy(xs) for v, xs in by_variant.items()},
                                    "checks": status["checks"].get("canary")}
        say(f"{TAG} canary ({plan.canary_share:.0%}): " + "; ".join(
            f"{v} {len(xs)} answers fields_mean {accuracy(xs).get('fields_mean')}" for v, xs in by_variant.items()))
    try:
        change, _ = promote_challenger(cfg, reason="simulation: shadow and canary passed", by=OPERATOR)
        result.promoted = bool(change.changed)
        result.rollout["promote"] = {"champion": change.model_id, "previous": change.previous}
        set_rollout(cfg, mode="off", reason="simulation: challenger promoted", by=OPERATOR)
        say(f"{TAG} promote: champion → {change.model_id[:12]} (was {str(change.previous)[:12]})")
    except TunesmithError as exc:
        result.rollout["promote"] = {"refused": str(exc)}
        say(f"{TAG} promote refused: {exc}")


def _agreement_text(agreement: dict[str, Any] | None) -> str:
    if not agreement:
        return "n/a"
    return ", ".join(f"{k} {v.get('agreement', v.get('rate', '?'))}" for k, v in agreement.items())
