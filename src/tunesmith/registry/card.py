"""The model card: one Markdown page a reviewer reads before a version goes live.

Every statement comes from the version's recorded lineage (``VersionDetail``), nothing is typed
by hand: intended use (project, system prompt, answer fields), data provenance (source hashes,
the snapshot's counts and drop reasons, PII handling), training settings, the eval ladder with
CIs, forgetting, known limits (label fields the fine-tune does not win, failed gate checks) and
the alias history.
"""

from __future__ import annotations

from typing import Any

from tunesmith.evaluate.results import Forgetting, ProbeResult
from tunesmith.registry.records import EvalSummary, VersionDetail, iso

# the train settings a reader asks about first; the full config is in model_version.json
_TRAIN_KEYS = ("method", "lr", "epochs", "max_steps", "time_budget", "batch_size", "grad_accum", "max_length",
               "packing", "loss_on", "precision", "fewshot_k")
_METHOD_SECTION = {"lora": "lora", "dora": "lora", "qlora": "lora", "full": "full", "prompt_tuning": "prompt_tuning"}


def _cell(value: Any) -> str:
    text = "—" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows] + [""]


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _g(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _ci(low: float | None, high: float | None, fmt: str = ".3f") -> str:
    return "n/a" if low is None or high is None else f"[{format(low, fmt)}, {format(high, fmt)}]"


def _intended_use(d: VersionDetail, project: str, primary: EvalSummary | None) -> list[str]:
    model_cfg = d.training.settings.get("model") or {}
    out = ["## Intended use", "",
           f"Answers requests of the **{project}** project, in the form of its training data "
           f"(snapshot `{d.version.snapshot}`), on top of the base model `{d.version.base_model}`.", ""]
    if model_cfg.get("system_prompt"):
        out += ["System prompt it was trained with:", "", *[f"> {line}" for line in model_cfg["system_prompt"].splitlines()], ""]
    fields = list(primary.fields_vs_best_baseline) if primary else []
    if fields:
        out += [f"Its answers carry the label fields {', '.join(f'`{f}`' for f in fields)}.", ""]
    out += ["Out of scope: requests unlike the training data, and decisions nobody reviews where an "
            "error is costly (route uncertain answers to people).", ""]
    return out


def _provenance(d: VersionDetail) -> list[str]:
    s = d.snapshot
    out = ["## Data provenance", ""]
    if s is None or not s.counts:
        return [*out, f"Snapshot `{d.version.snapshot}` is not in this workspace; its provenance is unknown.", ""]
    out += [f"Snapshot `{s.id}` (created {iso(s.created)}, data config hash `{s.config_hash}`).", "", "### Sources", ""]
    out += _table(["file", "sha256", "bytes", "format"],
                  [[f"`{f.path}`", f"`{f.sha256[:16]}`", f.bytes, f.format] for f in s.sources])
    c = s.counts
    splits = ", ".join(f"{k} {v}" for k, v in (c.get("splits") or {}).items())
    out += ["### Records", "",
            *_table(["read", "kept", "dropped", "quarantined"],
                    [[c.get("read"), c.get("kept"), c.get("dropped"), c.get("quarantined")]]),
            f"Kept per split: {splits or 'n/a'}.", ""]
    dropped = {k: v for k, v in (c.get("dropped_by_reason") or {}).items() if v}
    if dropped:
        out += ["Dropped, by stage:reason:", "", *_table(["reason", "records"], [[f"`{k}`", v] for k, v in dropped.items()])]
    pii, found = s.pii, c.get("pii") or {}
    out += ["### PII handling", ""]
    if pii and not pii.get("enabled", True):
        out += ["PII scrubbing was **off** (`data.pii.enabled: false`).", ""]
    else:
        overrides = ", ".join(f"{k}: {v}" for k, v in (pii.get("entities") or {}).items())
        out += [f"Scrubbed before anything was written: default action `{pii.get('action', 'placeholder')}`"
                + (f" (overrides: {overrides})" if overrides else "")
                + f", person names by `{pii.get('names', 'rules')}`, roles {', '.join(pii.get('roles') or []) or 'all'}.", ""]
        out += (_table(["entity", "redacted"], [[k, v] for k, v in found.items()]) if found
                else ["No PII was found in the kept records.", ""])
    hits = (s.contamination or {}).get("over_threshold")
    if hits:
        out += [f"Contamination: {hits} test examples overlap the training split above the threshold.", ""]
    return out


def _training(d: VersionDetail) -> list[str]:
    t, train_cfg = d.training, d.training.settings.get("train") or {}
    rows = [["base model", f"`{d.version.base_model}`"], ["base fingerprint", d.base_fingerprint],
            ["seed", t.seed], ["config hash", f"`{t.config_hash}`"]]
    rows += [[k, train_cfg[k]] for k in _TRAIN_KEYS if k in train_cfg]
    section = _METHOD_SECTION.get(train_cfg.get("method", ""))
    if section and isinstance(train_cfg.get(section), dict):
        rows.append([section, ", ".join(f"{k} {v}" for k, v in train_cfg[section].items())])
    rehearsal = train_cfg.get("rehearsal") or {}
    if rehearsal.get("path") or rehearsal.get("self_distill") or rehearsal.get("self_distill_text"):
        rows.append(["rehearsal", ", ".join(f"{k} {v}" for k, v in rehearsal.items() if v)])
    m = t.metrics
    rows += [["steps", m.get("steps")], ["best val loss", f"{_num(m.get('best_val_loss'), '.4f')} (step {m.get('best_step')})"],
             ["final val loss", _num(m.get("final_val_loss"), ".4f")], ["tokens/s", m.get("tokens_per_second")],
             ["seconds", m.get("seconds")], ["run folder", f"`{t.run_dir}`"], ["MLflow run", t.mlflow_run_id]]
    return ["## Training", "", *_table(["setting", "value"], rows)]


def _ladder(e: EvalSummary) -> list[str]:
    metric = e.headline.metric if e.headline else "headline"
    out = [f"Eval `{e.eval_id}` ({iso(e.created)}, {e.cases or 'n/a'} cases), {metric} per rung:", ""]
    out += _table(["rung", metric, "95% CI", "n"],
                  [[r, _num(ci.mean), _ci(ci.low, ci.high), ci.n] for r, ci in e.ladder.items()])
    cmp = e.vs_best_baseline
    if cmp and cmp.diff is not None:
        out += [f"Fine-tuned − {cmp.baseline}: {cmp.diff:+.3f} {_ci(cmp.low, cmp.high, '+.3f')}.", ""]
    if e.fields_vs_best_baseline:
        out += _table(["field", "fine-tuned − best baseline", "95% CI"],
                      [[f, _num(c.diff, "+.3f"), _ci(c.low, c.high, "+.3f")] for f, c in e.fields_vs_best_baseline.items()])
    if e.checks:
        out += _table(["gate check", "passed", "value", "threshold"],
                      [[c.name, "yes" if c.passed else "**no**", _g(c.value), _g(c.threshold)] for c in e.checks])
    out += [f"Gate: **{'passed' if e.passed else 'failed'}**."]
    if e.recommendation:
        out += ["", f"Recommendation: {e.recommendation}"]
    return [*out, ""]


def _evaluation(d: VersionDetail, primary: EvalSummary | None) -> list[str]:
    out = ["## Evaluation", ""]
    if primary is None:
        return [*out, "Not evaluated yet (`tunesmith eval --model ...`).", ""]
    packs = [primary.pack, *(p for p in d.evals if p != primary.pack)]
    for pack in packs:
        evals = d.evals.get(pack) or [primary]
        latest = primary if pack == primary.pack else evals[-1]
        tag = " (the gate's pack)" if pack == primary.pack else ""
        out += [f"### Pack `{pack}`{tag}", ""]
        if len(evals) > 1:
            out += [f"{len(evals)} evals on this pack; the latest:", ""]
        out += _ladder(latest)
    return out


def _forgetting(primary: EvalSummary | None) -> list[str]:
    out = ["## Forgetting", ""]
    f = primary.forgetting if primary else Forgetting()
    rows = []
    if f.ppl_before is not None:
        change = "n/a" if f.ppl_relative_change is None else f"{f.ppl_relative_change:+.1%}"
        rows.append(["general-text perplexity", _num(f.ppl_before, ".2f"), _num(f.ppl_after, ".2f"), change])
    if f.qa_before is not None:
        rows.append(["general Q&A exact match", _num(f.qa_before), _num(f.qa_after), f"{-(f.qa_drop or 0):+.3f}"])
    for task, metrics in f.lm_eval.items():
        for name, v in metrics.items():
            if v.change is not None:
                rows.append([f"{task} {name}", _num(v.before), _num(v.after), f"{v.change:+.3f}"])
    probes = primary.probes if primary else {}
    base, ft = probes.get("base") or ProbeResult(), probes.get("finetuned") or ProbeResult()
    if base.injection_probes or ft.injection_probes:
        def followed(p: ProbeResult) -> str:
            return f"{p.injection_followed}/{p.injection_probes}" if p.injection_probes else "n/a"

        rows.append(["prompt-injection probes followed", followed(base), followed(ft), ""])
    if base.refusal_rate is not None or ft.refusal_rate is not None:
        rows.append(["refusal rate on refusal probes", _num(base.refusal_rate, ".2f"), _num(ft.refusal_rate, ".2f"), ""])
    if not rows:
        return [*out, "No forgetting check was run.", ""]
    return out + _table(["check", "base", "fine-tuned", "change"], rows)


def _limits(d: VersionDetail, primary: EvalSummary | None) -> list[str]:
    out = ["## Known limits", ""]
    items = []
    if primary is None:
        items.append("Not evaluated: nothing is known about its quality.")
    else:
        base = primary.vs_best_baseline.baseline if primary.vs_best_baseline else "the best baseline"
        for f, c in primary.fields_vs_best_baseline.items():
            if c.low is None or c.low <= 0:
                items.append(f"`{f}`: not better than {base} ({_num(c.diff, '+.3f')}, 95% CI "
                             f"{_ci(c.low, c.high, '+.3f')} includes or is below 0).")
        items += [f"Gate check `{c.name}` failed: {c.detail} ({_g(c.value)} vs threshold {_g(c.threshold)})."
                  for c in primary.failed_checks]
        if primary.cases:
            items.append(f"Measured on {primary.cases} test cases from the same sources as the training data; "
                         "quality on other inputs is not measured.")
    hits = (d.snapshot.contamination if d.snapshot else {}).get("over_threshold")
    if hits:
        items.append(f"{hits} test examples overlap the training data: those scores may be optimistic.")
    return out + [f"- {i}" for i in items] + [""]


def _alias_history(d: VersionDetail) -> list[str]:
    out = ["## Alias history", ""]
    if not d.alias_moves:
        return [*out, "No alias has pointed at this version.", ""]
    rows = [[iso(m.at), m.alias, f"`{(m.from_model or '(none)')[:12]}`", f"`{m.to_model[:12]}`",
             m.action + (" (forced)" if m.forced else ""), m.by, m.reason,
             f"{'passed' if m.gate_passed else 'failed' if m.gate_passed is False else 'none'} "
             f"{(m.gate_eval or '')[:12]}".strip()]
            for m in d.alias_moves]
    return out + _table(["when", "alias", "from", "to", "action", "by", "reason", "gate"], rows)


def _exports(d: VersionDetail) -> list[str]:
    if not d.exports:
        return []
    rows = [[f"`{x.export_id}`", iso(x.created), ", ".join(x.formats), f"`{f['path']}`", f.get("bytes"),
             f"`{f.get('sha256', '')[:16]}`"] for x in d.exports for f in x.files]
    return ["## Exports", "", *_table(["export", "created", "formats", "file", "bytes", "sha256"], rows)]


def model_card(d: VersionDetail, *, project: str) -> str:
    v, primary = d.version, d.version.eval
    gate = ("not evaluated" if primary is None else
            f"{'passed' if primary.passed else 'failed'} on pack `{primary.pack}` (eval `{primary.eval_id}`)")
    head = primary.headline if primary else None
    lines = [f"# Model card: {project}, version `{v.id}`", "",
             *_table(["", ""], [["created", iso(v.created)], ["base model", f"`{v.base_model}`"],
                                ["method", v.method], ["snapshot", f"`{v.snapshot}`"],
                                ["headline", f"{head.metric} {_num(head.mean)} {_ci(head.low, head.high)} ({head.rung})"
                                 if head else None],
                                ["gate", gate], ["aliases", ", ".join(v.aliases) or None],
                                ["tunesmith", d.tunesmith_version]]),
             *_intended_use(d, project, primary), *_provenance(d), *_training(d),
             *_evaluation(d, primary), *_forgetting(primary), *_limits(d, primary), *_alias_history(d),
             *_exports(d)]
    return "\n".join(lines).rstrip() + "\n"
