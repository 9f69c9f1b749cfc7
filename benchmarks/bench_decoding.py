"""Free vs constrained vs rank decoding of one fine-tuned model on a label task.

    python benchmarks/bench_decoding.py PROJECT_DIR [--cases 200] [--decodings free,constrained,rank]

``PROJECT_DIR`` is a trained project with ``eval.output.kind: label`` — e.g. the ``intents``
folder that ``bench_defaults.py --out DIR`` or ``sweep_defaults.py`` leaves behind. For each
decoding, the project's config is written beside it as ``tunesmith.decoding-<name>.yaml`` with
``eval.output.decoding`` set, only the ``finetuned`` rung, no probes, forgetting checks or
confidence calibration (``review.calibration_examples: 0``), and ``eval.max_cases`` = ``--cases``; then ``tunesmith.evaluate`` runs it on the latest model version,
so every decoding answers the same seeded test cases with the same weights.

Per decoding: label accuracy with its 95% CI, answers outside the label set, and seconds per
answer (the rung's generation wall time / cases; rank scores every label for every case).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

DECODINGS = ("free", "constrained", "rank")


def run(project: Path, decoding: str, cases: int) -> dict[str, Any]:
    from tunesmith.config import load_config
    from tunesmith.evaluate.pack import load_pack
    from tunesmith.evaluate.runner import evaluate
    from tunesmith.workspace import Workspace

    cfg = yaml.safe_load((project / "tunesmith.yaml").read_text(encoding="utf-8"))
    ev = cfg.setdefault("eval", {})
    if (ev.get("output") or {}).get("kind") != "label":
        raise SystemExit(f"{project}: eval.output.kind is not label")
    ev["output"]["decoding"] = decoding
    ev.update({"rungs": ["finetuned"], "probes": False, "forgetting": False, "max_cases": cases})
    cfg.setdefault("review", {})["calibration_examples"] = 0  # the eval's confidence fit: not measured here
    path = project / f"tunesmith.decoding-{decoding}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    config = load_config(path)
    t0 = time.perf_counter()
    result = evaluate(config)
    r = result.results.to_dict()
    labels = set(load_pack(Workspace(config.workspace_dir), r["pack"]).settings["output"]["labels"] or [])
    rung = r["ladder"]["finetuned"]
    m = rung["metrics"][r["headline"]]
    outside = [a for a in rung["answers"] if a.strip() not in labels]
    return {"decoding": decoding, "headline": r["headline"], "cases": r["cases"], "mean": m["mean"],
            "low": m["low"], "high": m["high"], "outside": len(outside), "examples": outside[:3],
            "labels": len(labels), "model": r["model"],
            "seconds_per_answer": rung["cost"]["seconds_per_answer"],
            "eval_seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path, help="a trained project folder with eval.output.kind: label")
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--decodings", default=",".join(DECODINGS))
    args = ap.parse_args(argv)
    names = [d.strip() for d in args.decodings.split(",") if d.strip()]
    if bad := [d for d in names if d not in DECODINGS]:
        ap.error(f"--decodings: unknown {bad}; choose from {', '.join(DECODINGS)}")
    rows = []
    for name in names:
        rows.append(run(args.project, name, args.cases))
        row = rows[-1]
        print(f"{name}: {row['headline']} {row['mean']:.3f}, {row['outside']} outside, "
              f"{row['seconds_per_answer']:.3f} s/answer", flush=True)
    first = rows[0]
    print(f"\n== {args.project.name}: model {first['model']}, {first['cases']} cases, "
          f"{first['labels']} labels, finetuned rung")
    print(f"{'decoding':<12} {'headline':<10} {'mean (95% CI)':<22} {'outside set':>11} {'s/answer':>9}")
    for row in rows:
        ci = f"{row['mean']:.3f} ({row['low']:.3f}–{row['high']:.3f})"
        print(f"{row['decoding']:<12} {row['headline']:<10} {ci:<22} {row['outside']:>11} "
              f"{row['seconds_per_answer']:>9.3f}" + (f"   e.g. {row['examples']}" if row["examples"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
