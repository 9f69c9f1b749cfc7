"""What each page shows, read through the stages' own functions (registry, eval results, review
queue, rollout events, alarms). Each function returns plain values for one template; nothing here
knows about HTTP."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.results import EvalResults, load_results
from tunesmith.monitor import alarms as alarm_table
from tunesmith.registry.versions import (
    eval_summary,
    read_json,
    snapshot_info,
    training_run,
    version_record,
)
from tunesmith.review.routing import TIERS
from tunesmith.serve.rollout import effective_settings
from tunesmith.serve.rollout_admin import rollout_status
from tunesmith.train.tracking import read_metrics
from tunesmith.ui import charts, lineage, traffic
from tunesmith.ui.project import Project
from tunesmith.workspace import Artifact

PAGE = 25  # rows per page of the quarantine browser
ERRORS_PAGE = 8  # cases per page of the worst errors (each shows every rung's answer)


def traffic_summary(p: Project, latest: int = traffic.LATEST) -> traffic.TrafficSummary:
    """The request log's summary, recomputed only when the log was written since (exact)."""
    mark = traffic.log_mark(p.ws.db_path)
    return p.cached("traffic", f"{mark}:{latest}", lambda: traffic.summary(p.ws.db_path, latest=latest))


# ---------------------------------------------------------------------------- overview
def overview(p: Project) -> dict[str, Any]:
    aliases = p.registry.aliases()
    rollout = p.cfg.serve.rollout
    settings, last = effective_settings(rollout, p.events)
    latest = p.ws.latest("eval")
    last_eval = eval_summary(p.ws, latest, details=True) if latest else None
    counts = p.queue.counts()
    return {
        "aliases": aliases, "champion": aliases.get("champion"),
        "challenger_alias": rollout.challenger_alias, "challenger": aliases.get(rollout.challenger_alias),
        "rollout": asdict(settings), "rollout_changed": last,
        "traffic": traffic_summary(p, latest=2_000),
        "last_eval": last_eval, "last_eval_model": latest.meta.get("model") if latest else None,
        "queue": {t: counts.get(t, {"pending": 0, "decided": 0}) for t in TIERS if t != "auto"},
        "alarms": (recent := alarm_table.history(p.ws.db_path, limit=100))[:5],
        "monitor_status": {kind: next((a for a in recent if a.kind == kind), None)
                           for kind in ("input_drift", "output_drift", "quality")},
        "versions": len(p.ws.list("model")),
    }


# ---------------------------------------------------------------------------- models
def models(p: Project) -> dict[str, Any]:
    return {"versions": list(reversed(p.registry.versions())), "aliases": p.registry.aliases(),
            "moves": list(reversed(p.registry.history()))[:30]}


def model(p: Project, ref: str, base: str) -> dict[str, Any]:
    from markdown_it import MarkdownIt

    from tunesmith.registry.card import model_card

    detail = p.registry.show(ref)
    card = model_card(detail, project=p.name)  # what `tunesmith models card` prints, from the same detail
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return {"d": detail, "svg": lineage.svg(detail, base), "card_html": md.render(card),
            "aliases": p.registry.aliases()}


# ---------------------------------------------------------------------------- evaluation
def results(p: Project, art: Artifact) -> EvalResults:
    return p.cached("results", art.id, lambda: load_results(art.path / "results.json"))


def _pack_cases(p: Project, pack_id: str | None) -> list[Any]:
    if not pack_id:
        return []

    def load() -> list[Any]:
        from tunesmith.evaluate.pack import load_pack

        try:
            return load_pack(p.ws, pack_id).cases
        except (TunesmithError, OSError, ValueError, KeyError):
            return []  # the pack is not in this workspace: answers are shown without inputs

    return p.cached("pack", pack_id, load)


def _turn(messages: list[dict[str, str]] | None, role: str) -> str:
    found = [m.get("content") or "" for m in messages or [] if m.get("role") == role]
    return found[-1] if found else ""


def _case_input(case: Any) -> str:
    """The user turn of a chat case, or the text of a raw-text one."""
    return _turn(case.messages, "user") or (case.text or "")


def evaluation(p: Project, eval_id: str | None, *, field: str | None, query: str, page: int) -> dict[str, Any]:
    evals = list(reversed(p.ws.list("eval")))
    if not evals:
        return {"evals": [], "art": None}
    art = p.ws.get("eval", eval_id) if eval_id else evals[0]
    r = results(p, art)
    compared = r.compared_rung or next((k for k in ("finetuned", "finetuned_rag") if k in r.ladder), None)
    fields = sorted({f for rung in r.ladder.values() for f in rung.fields})
    ladder = [{"rung": name, "headline": rung.metrics.get(r.headline), "fields": rung.fields,
               "cost": rung.cost} for name, rung in r.ladder.items()]
    comparisons = [(name, c) for name, c in (("fine-tuned − best baseline", r.finetuned_vs_best_baseline),
                                             ("fine-tuned + RAG − fine-tuned", r.finetuned_rag_vs_finetuned),
                                             ("fine-tuned few-shot − fine-tuned", r.finetuned_fewshot_vs_finetuned))
                   if c is not None]
    comparisons += [(f"vs zero-shot: {k}", c) for k, c in r.vs_zero_shot.items()]
    return {"evals": evals, "art": art, "r": r, "compared": compared, "fields": fields, "ladder": ladder,
            "comparisons": comparisons, "ci_svg": charts.ci_chart(r),
            "reliability": (rel := reliability(r, compared)), "reliability_svg": charts.reliability_chart(rel),
            "errors": worst_errors(p, r, compared, field=field, query=query, page=page),
            "field": field, "query": query}


def worst_errors(p: Project, r: EvalResults, rung: str | None, *, field: str | None, query: str,
                 page: int) -> dict[str, Any]:
    """The compared rung's lowest-scoring cases, each with its input, reference and every rung's
    answer; ``field`` keeps cases that field got wrong, ``query`` cases whose input has the text."""
    if rung is None or rung not in r.ladder:
        return {"rows": [], "total": 0, "page": 1, "pages": 1}
    scores = r.ladder[rung].scores
    cases = _pack_cases(p, r.pack)
    metric = f"field/{field}" if field else r.headline
    order = []
    for i, s in enumerate(scores):
        value = s.get(metric)
        if value is None or value >= 1.0:
            continue
        text = _case_input(cases[i]) if i < len(cases) else ""
        if query and query.lower() not in text.lower():
            continue
        order.append((value, i))
    order.sort()
    pages = max(1, -(-len(order) // ERRORS_PAGE))
    page = min(max(page, 1), pages)
    rows = []
    for value, i in order[(page - 1) * ERRORS_PAGE: page * ERRORS_PAGE]:
        case = cases[i] if i < len(cases) else None
        rows.append({"i": i, "score": value, "input": _case_input(case) if case else "",
                     "reference": _turn(case.messages, "assistant") if case else "",
                     "answers": {name: (rg.answers[i] if i < len(rg.answers) else None,
                                        rg.scores[i].get(metric) if i < len(rg.scores) else None)
                                 for name, rg in r.ladder.items()}})
    return {"rows": rows, "total": len(order), "page": page, "pages": pages, "metric": metric}


def reliability(r: EvalResults, rung: str | None) -> list[dict[str, Any]]:
    """Confidence bins of a rung that recorded confidences (rank decoding): mean confidence
    against accuracy per bin, the reliability diagram's points."""
    if rung is None or rung not in r.ladder or not r.ladder[rung].confidence:
        return []
    import numpy as np

    from tunesmith.review.calibration import reliability as bins

    rg = r.ladder[rung]
    pairs = [(c, s.get(r.headline)) for c, s in zip(rg.confidence or [], rg.scores, strict=False)]
    pairs = [(c, v) for c, v in pairs if c is not None and v is not None]
    if not pairs:
        return []
    conf, correct = np.array([c for c, _ in pairs], float), np.array([v >= 1.0 for _, v in pairs])
    return [asdict(b) for b in bins(conf, correct, bins=10) if b.count]


# ---------------------------------------------------------------------------- training runs
def runs(p: Project, model_ref: str | None) -> dict[str, Any]:
    versions = list(reversed(p.ws.list("model")))
    if not versions:
        return {"versions": [], "art": None}
    art = p.registry.resolve(model_ref) if model_ref else versions[0]
    record = version_record(art)
    run = training_run(record)
    metrics = read_metrics(run.run_dir / "metrics.jsonl") if run.run_dir else []
    steps = [(m["step"], m["loss"]) for m in metrics if m.get("event") == "step" and "loss" in m]
    evals = [(m["step"], m["val_loss"]) for m in metrics if m.get("event") == "eval" and "val_loss" in m]
    curve = {"step": [s for s, _ in steps], "loss": [v for _, v in steps],
             "val_step": [s for s, _ in evals], "val_loss": [v for _, v in evals]}
    return {"versions": versions, "art": art, "record": record, "run": run, "curve": curve,
            "train": (run.settings.get("train") or {}), "model_cfg": (run.settings.get("model") or {}),
            "parents": p.ws.parents("model", art.id)}


# ---------------------------------------------------------------------------- data
def data(p: Project, snapshot_id: str | None, page: int) -> dict[str, Any]:
    snapshots = list(reversed(p.ws.list("snapshot")))
    if not snapshots:
        return {"snapshots": [], "snap": None}
    art = p.ws.get("snapshot", snapshot_id) if snapshot_id else snapshots[0]
    info = snapshot_info(p.ws, art.id)
    counts = info.counts if info else {}
    manifest = read_json(art.path / "manifest.json")
    page = max(page, 1)
    q_rows, q_total = quarantine_page(art.path / "quarantine.jsonl", page)
    for row in q_rows:
        row["preview"] = p.scrub(str(row.get("preview") or ""))
    plots = sorted(f.name for f in art.path.glob("*.png"))
    return {"snapshots": snapshots, "snap": art, "info": info, "counts": counts,
            "by_reason": sorted((counts.get("dropped_by_reason") or {}).items(), key=lambda kv: -kv[1]),
            "by_stage": sorted((counts.get("dropped_by_stage") or {}).items(), key=lambda kv: -kv[1]),
            "pii": sorted((counts.get("pii") or {}).items(), key=lambda kv: -kv[1]),
            "contamination": manifest.get("contamination") or {},
            "quarantine": q_rows, "q_total": q_total, "page": page, "pages": max(1, -(-q_total // PAGE)),
            "plots": plots}


def quarantine_page(path: Path, page: int) -> tuple[list[dict[str, Any]], int]:
    """One page of a snapshot's quarantine file (records that could not be read: source file,
    location, error, the first 200 characters of the raw input, as the reader saw it: the caller
    scrubs PII before showing it) and the file's line count."""
    if not path.exists():
        return [], 0
    start, rows, total = (max(page, 1) - 1) * PAGE, [], 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for total, line in enumerate(fh, 1):
            if start < total <= start + PAGE and line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    rows.append({"source": "?", "location": f"quarantine line {total}", "error": "unreadable",
                                 "preview": line[:200]})
    return rows, total


# ---------------------------------------------------------------------------- deployments
def deployments(p: Project) -> dict[str, Any]:
    # a pure function of the request log, the rollout events and the aliases: recomputed only
    # when one of them was written since (the same exact cache as the traffic summary)
    last_event = p.events.read(limit=1)
    moves = p.registry.history()
    key = f"{traffic.log_mark(p.ws.db_path)}:{last_event[-1]['seq'] if last_event else 0}:{moves[-1].seq if moves else 0}"
    status = p.cached("rollout", key, lambda: rollout_status(p.cfg, events=50))
    return {"traffic": traffic_summary(p), "rollout": status,
            "events": list(reversed(status["events"]))}


# ---------------------------------------------------------------------------- monitoring
EFFECT_THRESHOLDS = {"length": "min_length_ks", "unseen": "min_unseen_rise", "embedding": "min_auc",
                     "label": "min_js", "confidence": "min_confidence_ks"}


def monitoring(p: Project) -> dict[str, Any]:
    """Every recorded alarm, and per alarming check its effect size over time with the threshold
    it alarms at (``monitor.min_*``; for the quality chart, the acceptable error rate p0)."""
    history = alarm_table.history(p.ws.db_path, limit=200)
    series: dict[str, dict[str, Any]] = {}
    for a in reversed(history):  # oldest first for the charts
        for check, d in a.detail.items():
            if not isinstance(d, dict):
                continue
            effect = next(((k, v) for k, v in d.items() if k not in ("test", "p_value") and isinstance(v, int | float)
                           and not isinstance(v, bool)), None)
            if effect is None:
                continue
            threshold, label = _threshold(p, check, d)
            s = series.setdefault(check, {"check": check, "effect": effect[0], "t": [], "v": [],
                                          "threshold": threshold, "threshold_label": label})
            s["t"].append(a.window_end or a.time)  # when the traffic drifted, else when it was recorded
            s["v"].append(effect[1])
    return {"alarms": history, "series": list(series.values()), "monitor": p.cfg.monitor,
            "traffic": traffic_summary(p)}


def _threshold(p: Project, check: str, detail: dict[str, Any]) -> tuple[float | None, str]:
    """The line an alarming check's chart draws: the quality chart's acceptable error rate, a
    field's smallest alarming rise, or a drift check's smallest alarming effect."""
    if check.startswith("quality.field."):
        return p.cfg.monitor.quality.min_field_rise, "smallest alarming rise"
    if check.startswith("quality"):
        return detail.get("p0"), "acceptable error rate (p0)"
    for part, key in EFFECT_THRESHOLDS.items():
        if part in check:
            return getattr(p.cfg.monitor, key, None), "alarm threshold"
    return None, "alarm threshold"
