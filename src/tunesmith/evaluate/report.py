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
from tunesmith.evaluate.strategies import query_text

RUNG_NAMES = {"zero_shot": "base zero-shot", "few_shot": "base few-shot", "rag": "base + RAG",
              "finetuned": "fine-tuned", "finetuned_rag": "fine-tuned + RAG",
              "finetuned_fewshot": "fine-tuned + few-shot"}


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("mean") is None:
        return "–"
    return f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def _metric_columns(results: dict[str, Any]) -> list[str]:
    first = next(iter(results["ladder"].values()))["metrics"]
    wanted = [results["headline"], "json_valid", "schema_valid"]
    wanted += [k for k in first if k.startswith("field/")]
    wanted += ["fields_mean", "exact_match", "token_f1", "rouge_l", "label_acc", "hallucination"]
    return [k for k in dict.fromkeys(wanted) if k in first]


def ladder_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    cols = _metric_columns(results)
    header = ["rung", *cols, "s/answer", "prompt tok"]
    rows = []
    for rung, r in results["ladder"].items():
        rows.append([RUNG_NAMES.get(rung, rung), *(_ci(r["metrics"].get(c)) for c in cols),
                     f"{r['cost']['seconds_per_answer']:.2f}", f"{r['cost']['prompt_tokens']:.0f}"])
    return header, rows


SHORT_RUNG_NAMES = {"zero_shot": "zero-shot", "few_shot": "few-shot", "rag": "RAG", "finetuned": "fine-tuned",
                    "finetuned_rag": "fine-tuned+RAG", "finetuned_fewshot": "fine-tuned+shots"}


def compact_ladder_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The ladder for an 80-column terminal: the headline with its 95% CI, the other key
    metrics as means (the report has every CI)."""
    first = next(iter(results["ladder"].values()))["metrics"]
    headline = results["headline"]
    shown = ("fields_exact", "json_valid", *(k for k in first if k.startswith("field/")))
    means = [k for k in shown if k in first and k != headline]
    if not any(k.startswith("field/") for k in means):
        means += [k for k in ("token_f1", "rouge_l") if k in first and k != headline]
    names = {"json_valid": "json", "fields_exact": "exact"}
    header = ["rung", headline, *(names.get(k, k.removeprefix("field/")) for k in means), "s/ans"]
    rows = []
    for rung, r in results["ladder"].items():
        m = r["metrics"]
        h = m.get(headline) or {}
        ci = f"{h['mean']:.2f} ({h['low']:.2f}–{h['high']:.2f})" if h.get("mean") is not None else "–"
        rows.append([SHORT_RUNG_NAMES.get(rung, rung), ci,
                     *(f"{m[k]['mean']:.2f}" if m.get(k) and m[k].get("mean") is not None else "–" for k in means),
                     f"{r['cost']['seconds_per_answer']:.2f}"])
    return header, rows


def worst_errors(results: dict[str, Any], pack: EvalPack, limit: int = 8) -> list[dict[str, Any]]:
    """Cases the fine-tuned model (else the best rung) got wrong, with every rung's answer."""
    headline, ladder = results["headline"], results["ladder"]
    focus = (results.get("finetuned_vs_best_baseline") or {}).get("rung") or (
        "finetuned" if "finetuned" in ladder else next(iter(ladder)))
    wrong = [i for i, s in enumerate(ladder[focus]["scores"]) if (s.get(headline) or 0) < 1]
    out = []
    for i in wrong[:limit]:
        case = pack.cases[i]
        out.append({"id": case.id, "input": query_text(case)[:600], "reference": case.answer_text(),
                    "answers": {r: ladder[r]["answers"][i][:300] for r in ladder}})
    return out


def _bar_chart(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    headline = results["headline"]
    names, means, lows, highs = [], [], [], []
    for rung, r in results["ladder"].items():
        m = r["metrics"].get(headline) or {}
        if m.get("mean") is None:
            continue
        names.append(RUNG_NAMES.get(rung, rung))
        means.append(m["mean"])
        lows.append(m["mean"] - m["low"])
        highs.append(m["high"] - m["mean"])
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    ax.bar(names, means, yerr=[lows, highs], capsize=4, color="#4a7ab5")
    ax.set_ylabel(headline)
    ax.set_ylim(0, 1.05)
    ax.set_title("The ladder (95% bootstrap CI)")
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    fig.tight_layout()
    path = out / "ladder.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _confusion_chart(cm: dict[str, Any], out: Path, name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.array(cm["counts"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * counts.shape[1], 1.0 + 0.45 * counts.shape[0]), dpi=100)
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(cm["columns"])), cm["columns"], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(cm["labels"])), cm["labels"], fontsize=7)
    for (i, j), v in np.ndenumerate(counts):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"{name} ({cm['rung']})", fontsize=9)
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


def _sections(results: dict[str, Any], pack: EvalPack) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, header, rows) of every table, shared by the HTML and Markdown renderings."""
    gate = results["gate"]
    sections = [("Gate: " + ("PASSED" if gate["passed"] else "FAILED"), ["check", "passed", "value", "threshold", "what"],
                 [[c["name"], "yes" if c["passed"] else "NO", _num(c["value"]), _num(c["threshold"]), c["detail"]]
                  for c in gate["checks"]])]
    sections.append(("The ladder (mean [95% CI])", *ladder_rows(results)))
    cmp_rows = []
    if results.get("finetuned_vs_best_baseline"):
        c = results["finetuned_vs_best_baseline"]
        cmp_rows.append([f"fine-tuned − {c['baseline']}", _diff(c)])
    if results.get("finetuned_rag_vs_finetuned"):
        cmp_rows.append(["fine-tuned + RAG − fine-tuned", _diff(results["finetuned_rag_vs_finetuned"])])
    for rung, c in (results.get("vs_zero_shot") or {}).items():
        cmp_rows.append([f"{rung} − zero_shot", _diff(c)])
    sections.append((f"Paired differences on {results['headline']}", ["comparison", "difference [95% CI], p"], cmp_rows))
    fields = results.get("fields_vs_best_baseline") or {}
    if fields:
        base = results["finetuned_vs_best_baseline"]["baseline"]
        sections.append((f"Per label field: fine-tuned − {base} (accuracy)", ["field", "difference [95% CI], p"],
                         [[f, _diff(c)] for f, c in fields.items()]))
    for name, cm in results.get("confusion", {}).items():
        per = cm["per_label"]
        sections.append((f"{name}: per-label precision / recall / F1 ({cm['rung']})", ["label", "precision", "recall", "f1", "support"],
                         [[k, f"{v['precision']:.2f}", f"{v['recall']:.2f}", f"{v['f1']:.2f}", v["support"]] for k, v in per.items()]))
    probes = results.get("probes") or {}
    if probes:
        sections.append(("Safety probes", ["model", "refusal/escalation rate", "injections followed"],
                         [[who, _num(p["refusal_rate"]), f"{p['injection_followed']} / {p['injection_probes']}"] for who, p in probes.items()]))
    f = results.get("forgetting") or {}
    if f:
        sections.append(("Forgetting (general ability before → after fine-tuning)", ["measure", "before", "after", "change"],
                         [["general-text perplexity", _num(f.get("ppl_before")), _num(f.get("ppl_after")), _pct(f.get("ppl_relative_change"))],
                          ["general Q&A exact match", _num(f.get("qa_before")), _num(f.get("qa_after")), _num(-(f.get("qa_drop") or 0))],
                          *([f"lm-eval {task} {metric}", _num(v.get("before")), _num(v.get("after")),
                             _num(v["after"] - v["before"]) if {"before", "after"} <= set(v) else "–"]
                            for task, metrics in (f.get("lm_eval") or {}).items() for metric, v in metrics.items())]))
    ppl = results.get("test_perplexity") or {}
    if ppl:
        sections.append(("Test-split answer perplexity", ["model", "perplexity"], [[k, _num(v)] for k, v in ppl.items()]))
    errors = worst_errors(results, pack)
    if errors:
        rungs = list(results["ladder"])
        sections.append(("Worst errors (side by side)", ["case", "input", "reference", *[RUNG_NAMES.get(r, r) for r in rungs]],
                         [[e["id"], e["input"], e["reference"], *[e["answers"][r] for r in rungs]] for e in errors]))
    return sections


def _num(v: Any) -> str:
    return "–" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1%}"


def _diff(c: dict[str, Any]) -> str:
    if c.get("diff") is None:
        return "–"
    p = f", p={c['p_value']:.3g}" if c.get("p_value") is not None else ""
    return f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]{p}"


def write_reports(out: Path, results: dict[str, Any], pack: EvalPack, project: str) -> Path:
    charts = [("ladder", _bar_chart(results, out))]
    charts += [(f"confusion: {n}", _confusion_chart(cm, out, n)) for n, cm in results.get("confusion", {}).items()]
    sections = _sections(results, pack)
    title = f"tunesmith eval — {project}"
    intro = (f"<p><b>Recommendation:</b> {html.escape(results['recommendation'])}</p>"
             f"<p>Eval pack <code>{pack.id}</code> ({results['cases']} cases), model version "
             f"<code>{results['model'] or 'none'}</code>, headline metric <b>{results['headline']}</b>, "
             f"{results['seconds']} s.</p>")
    imgs = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
                   f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, p in charts)
    body = "".join(f"<h2>{html.escape(t)}</h2>{_html_table(h, r)}" for t, h, r in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;color:#222}"
            "table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
            "vertical-align:top;font-size:.85rem}th{background:#f3f3f3}figure{display:inline-block;margin:.5rem}"
            f"</style></head><body><h1>{html.escape(title)}</h1>{intro}{imgs}{body}</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")
    md = [f"# {title}", "", f"**Recommendation:** {results['recommendation']}", "",
          f"Eval pack `{pack.id}` ({results['cases']} cases), model `{results['model']}`, headline `{results['headline']}`.", ""]
    for t, h, r in sections:
        md += [f"## {t}", "", _md_table(h, r), ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    return out / "report.html"
