"""The eval report: one self-contained HTML page and the same content as Markdown.

Sections: recommendation and gate, the ladder with 95% CIs, paired differences, per-field
accuracy and the confusion matrix, the worst errors side by side, probes, forgetting, and
cost/latency per rung.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from tunesmith.evaluate.pack import EvalPack
from tunesmith.evaluate.results import Comparison, Confusion, EvalResults, MetricCI
from tunesmith.evaluate.strategies import query_text

Results = EvalResults | dict[str, Any]

RUNG_NAMES = {"zero_shot": "base zero-shot", "few_shot": "base few-shot", "rag": "base + RAG",
              "finetuned": "fine-tuned", "finetuned_rag": "fine-tuned + RAG",
              "finetuned_fewshot": "fine-tuned + few-shot"}


def _ci(m: MetricCI | None) -> str:
    if m is None or m.mean is None or m.low is None or m.high is None:
        return "–"
    return f"{m.mean:.3f} [{m.low:.3f}, {m.high:.3f}]"


def _metric_columns(results: EvalResults) -> list[str]:
    first = next(iter(results.ladder.values())).metrics
    wanted = [results.headline, "json_valid", "schema_valid"]
    wanted += [k for k in first if k.startswith("field/")]
    wanted += ["fields_mean", "exact_match", "token_f1", "rouge_l", "label_acc", "hallucination"]
    return [k for k in dict.fromkeys(wanted) if k in first]


def ladder_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    results = EvalResults.coerce(results)
    cols = _metric_columns(results)
    header = ["rung", *cols, "s/answer", "prompt tok"]
    rows = []
    for rung, r in results.ladder.items():
        cost = r.cost
        rows.append([RUNG_NAMES.get(rung, rung), *(_ci(r.metrics.get(c)) for c in cols),
                     _fixed(cost.seconds_per_answer if cost else None, ".2f"),
                     _fixed(cost.prompt_tokens if cost else None, ".0f")])
    return header, rows


def _fixed(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


SHORT_RUNG_NAMES = {"zero_shot": "zero-shot", "few_shot": "few-shot", "rag": "RAG", "finetuned": "fine-tuned",
                    "finetuned_rag": "fine-tuned+RAG", "finetuned_fewshot": "fine-tuned+shots"}


def compact_ladder_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """The ladder for an 80-column terminal: the headline with its 95% CI, the other key
    metrics as means (the report has every CI)."""
    results = EvalResults.coerce(results)
    first = next(iter(results.ladder.values())).metrics
    headline = results.headline
    shown = ("fields_exact", "json_valid", *(k for k in first if k.startswith("field/")))
    means = [k for k in shown if k in first and k != headline]
    if not any(k.startswith("field/") for k in means):
        means += [k for k in ("token_f1", "rouge_l") if k in first and k != headline]
    names = {"json_valid": "json", "fields_exact": "exact"}
    header = ["rung", headline, *(names.get(k, k.removeprefix("field/")) for k in means), "s/ans"]
    rows = []
    for rung, r in results.ladder.items():
        h = r.metrics.get(headline)
        ci = (f"{h.mean:.2f} ({h.low:.2f}–{h.high:.2f})"
              if h is not None and None not in (h.mean, h.low, h.high) else "–")
        rows.append([SHORT_RUNG_NAMES.get(rung, rung), ci, *(_fixed(r.mean(k), ".2f") for k in means),
                     _fixed(r.cost.seconds_per_answer if r.cost else None, ".2f")])
    return header, rows


def worst_errors(results: Results, pack: EvalPack, limit: int = 8) -> list[dict[str, Any]]:
    """Cases the fine-tuned model (else the best rung) got wrong, with every rung's answer."""
    results = EvalResults.coerce(results)
    headline, ladder = results.headline, results.ladder
    focus = (results.lead.rung if results.lead else None) or (
        "finetuned" if "finetuned" in ladder else next(iter(ladder)))
    wrong = [i for i, s in enumerate(ladder[focus].scores) if (s.get(headline) or 0) < 1]
    out = []
    for i in wrong[:limit]:
        case = pack.cases[i]
        out.append({"id": case.id, "input": query_text(case)[:600], "reference": case.answer_text(),
                    "answers": {r: ladder[r].answers[i][:300] for r in ladder}})
    return out


def _bar_chart(results: EvalResults, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, means, lows, highs = [], [], [], []
    for rung in results.ladder:
        m = results.headline_of(rung)
        if m is None or m.mean is None or m.low is None or m.high is None:
            continue
        names.append(RUNG_NAMES.get(rung, rung))
        means.append(m.mean)
        lows.append(m.mean - m.low)
        highs.append(m.high - m.mean)
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    ax.bar(names, means, yerr=[lows, highs], capsize=4, color="#4a7ab5")
    ax.set_ylabel(results.headline)
    ax.set_ylim(0, 1.05)
    ax.set_title("The ladder (95% bootstrap CI)")
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    fig.tight_layout()
    path = out / "ladder.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _confusion_chart(cm: Confusion, out: Path, name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.array(cm.counts)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * counts.shape[1], 1.0 + 0.45 * counts.shape[0]), dpi=100)
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(cm.columns)), cm.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(cm.labels)), cm.labels, fontsize=7)
    for (i, j), v in np.ndenumerate(counts):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"{name} ({cm.rung})", fontsize=9)
    fig.tight_layout()
    path = out / f"confusion-{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def _sections(results: Results, pack: EvalPack) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, header, rows) of every table, shared by the HTML and Markdown renderings."""
    results = EvalResults.coerce(results)
    passed = results.passed
    sections = [("Gate: " + ("PASSED" if passed else "FAILED"), ["check", "passed", "value", "threshold", "what"],
                 [[c.name, "yes" if c.passed else "NO", _num(c.value), _num(c.threshold), c.detail]
                  for c in results.checks])]
    sections.append(("The ladder (mean [95% CI])", *ladder_rows(results)))
    cmp_rows = []
    if results.lead:
        cmp_rows.append([f"fine-tuned − {results.lead.baseline}", _diff(results.lead)])
    if results.finetuned_rag_vs_finetuned:
        cmp_rows.append(["fine-tuned + RAG − fine-tuned", _diff(results.finetuned_rag_vs_finetuned)])
    for rung, c in results.vs_zero_shot.items():
        cmp_rows.append([f"{rung} − zero_shot", _diff(c)])
    sections.append((f"Paired differences on {results.headline}", ["comparison", "difference [95% CI], p"], cmp_rows))
    fields = results.fields_vs_best_baseline
    if fields:
        base = results.lead.baseline if results.lead else "the best baseline"
        sections.append((f"Per label field: fine-tuned − {base} (accuracy)", ["field", "difference [95% CI], p"],
                         [[f, _diff(c)] for f, c in fields.items()]))
    for name, cm in results.confusion.items():
        sections.append((f"{name}: per-label precision / recall / F1 ({cm.rung})",
                         ["label", "precision", "recall", "f1", "support"],
                         [[k, f"{v.precision:.2f}", f"{v.recall:.2f}", f"{v.f1:.2f}", v.support]
                          for k, v in cm.per_label.items()]))
    if results.calibration is not None:
        from tunesmith.evaluate.calibration_report import calibration_rows

        sections.append(("Confidence calibration", ["", ""], calibration_rows(results.calibration)))
    if results.probes:
        sections.append(("Safety probes", ["model", "refusal/escalation rate", "injections followed"],
                         [[who, _num(p.refusal_rate), f"{p.injection_followed} / {p.injection_probes}"]
                          for who, p in results.probes.items()]))
    f = results.forgetting
    if f.measured:
        sections.append(("Forgetting (general ability before → after fine-tuning)", ["measure", "before", "after", "change"],
                         [["general-text perplexity", _num(f.ppl_before), _num(f.ppl_after), _pct(f.ppl_relative_change)],
                          ["general Q&A exact match", _num(f.qa_before), _num(f.qa_after), _num(-(f.qa_drop or 0))],
                          *([f"lm-eval {task} {metric}", _num(v.before), _num(v.after), _num(v.change)]
                            for task, metrics in f.lm_eval.items() for metric, v in metrics.items())]))
    if results.test_perplexity:
        sections.append(("Test-split answer perplexity", ["model", "perplexity"],
                         [[k, _num(v)] for k, v in results.test_perplexity.items()]))
    errors = worst_errors(results, pack)
    if errors:
        rungs = list(results.ladder)
        sections.append(("Worst errors (side by side)", ["case", "input", "reference", *[RUNG_NAMES.get(r, r) for r in rungs]],
                         [[e["id"], e["input"], e["reference"], *[e["answers"][r] for r in rungs]] for e in errors]))
    return sections


def _num(v: Any) -> str:
    return "–" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1%}"


def _diff(c: Comparison) -> str:
    if c.diff is None or c.low is None or c.high is None:
        return "–"
    p = f", p={c.p_value:.3g}" if c.p_value is not None else ""
    return f"{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]{p}"


def write_reports(out: Path, results: Results, pack: EvalPack, project: str) -> Path:
    results = EvalResults.coerce(results)
    charts = [("ladder", _bar_chart(results, out))]
    charts += [(f"confusion: {n}", _confusion_chart(cm, out, n)) for n, cm in results.confusion.items()]
    sections = _sections(results, pack)
    title = f"tunesmith eval — {project}"
    intro = (f"<p><b>Recommendation:</b> {html.escape(results.recommendation or '')}</p>"
             f"<p>Eval pack <code>{pack.id}</code> ({results.cases} cases), model version "
             f"<code>{results.model or 'none'}</code>, headline metric <b>{results.headline}</b>, "
             f"{results.seconds} s.</p>")
    imgs = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
                   f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, p in charts)
    body = "".join(f"<h2>{html.escape(t)}</h2>{_html_table(h, r)}" for t, h, r in sections)
    if results.calibration is not None:  # reliability diagram, risk-coverage: inline SVG after its table
        from tunesmith.evaluate.calibration_report import calibration_figures

        anchor = "<h2>Confidence calibration</h2>"
        at = body.find("</table>", body.find(anchor)) + len("</table>")
        body = body[:at] + calibration_figures(results.calibration) + body[at:]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;color:#222}"
            "table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
            "vertical-align:top;font-size:.85rem}th{background:#f3f3f3}figure{display:inline-block;margin:.5rem}"
            f"</style></head><body><h1>{html.escape(title)}</h1>{intro}{imgs}{body}</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")
    md = [f"# {title}", "", f"**Recommendation:** {results.recommendation}", "",
          f"Eval pack `{pack.id}` ({results.cases} cases), model `{results.model}`, headline `{results.headline}`.", ""]
    for t, h, r in sections:
        md += [f"## {t}", "", _md_table(h, r), ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    return out / "report.html"
