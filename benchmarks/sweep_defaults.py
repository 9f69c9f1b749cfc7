"""Candidate training defaults, compared on short budgets before one is made the default.

    python benchmarks/sweep_defaults.py --out DIR [--datasets intents,summaries] [--rows 120]
                                        [--cases 100] [--configs b1_lr1e-3_top10,...]
                                        [--budget 4m]

Each candidate is a set of ``train`` fields on top of tunesmith's defaults (the ``CANDIDATES``
table below); each runs ``bench_defaults``' project for each dataset in its own folder, then
evaluates only the ``finetuned`` rung (the base-model rungs do not depend on training settings;
``bench_defaults`` measures them) on ``--cases`` frozen test cases, without the probes and
forgetting checks. The same seed and data make the cases identical across candidates, so their
headlines compare directly.

By default every candidate trains on the same number of packed rows (``--rows``: ``max_steps`` =
rows / batch size, the cosine schedule ending there; 64 validation examples), so what is
compared is how much each learns from the same data, whatever else runs on the machine: on a
shared 2-core CPU a time budget measures the neighbours' load as much as the candidate (one
such run got 35 steps where the idle machine gives 136). What a step costs is then a separate,
cheaper measurement: the trainer's own timing of the first steps (``s/step``, taken from the
budget's calibration, which runs in every candidate with a generous ``time_budget``) and the
layer counts' measured speed-ups (docs/training.md). ``--budget 4m`` instead runs each with
``train.time_budget`` (for an idle machine).

What a short run can and cannot say: it ranks how fast each candidate learns in its first
minutes, which is what a 15-minute CPU budget is made of; it does not show where each one would
end with hours. The proof of the chosen defaults is ``bench_defaults --budget 15m``.

Each finished run is appended to ``<out>/sweep.jsonl``, and a rerun with the same ``--out``
skips the (candidate, dataset) pairs already there, so an interrupted sweep resumes. The table
printed at the end: candidate, dataset, optimizer steps done, seconds per step (as timed by the
budget), validation loss at the end, and the headline mean with its 95% CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_defaults as bd

CANDIDATES: dict[str, list[str]] = {
    "default": [],
    "b1_lr1e-3": ["batch_size=1", "lr=1e-3"],
    "b1_lr2e-3": ["batch_size=1", "lr=2e-3"],
    "b2_lr1e-3": ["batch_size=2", "lr=1e-3"],
    "b1_lr1e-3_top10": ["batch_size=1", "lr=1e-3", "lora.top_layers=10"],
    "b1_lr2e-3_top10": ["batch_size=1", "lr=2e-3", "lora.top_layers=10"],
    "b1_lr1e-3_top15": ["batch_size=1", "lr=1e-3", "lora.top_layers=15"],
    "b1_lr5e-4_plus8": ["batch_size=1", "lr=5e-4", "lora.plus_ratio=8"],
    "b1_lr1e-3_top10_plus4": ["batch_size=1", "lr=1e-3", "lora.top_layers=10", "lora.plus_ratio=4"],
    "b1_lr2e-3_top10_k2": ["batch_size=1", "lr=2e-3", "lora.top_layers=10", "fewshot_k=2"],
}


class SweepLog(bd.TrainLog):
    """bench_defaults' progress lines, keeping the budget's step time and the last validation."""

    def __init__(self) -> None:
        super().__init__(every=120.0)
        self.seconds_per_step: float | None = None
        self.val_loss: float | None = None
        self.val_token_accuracy: float | None = None

    def __call__(self, e: dict[str, Any]) -> None:
        super().__call__(e)
        if e.get("event") == "budget":
            self.seconds_per_step = e["seconds_per_step"]
        elif e.get("event") == "eval":
            self.val_loss, self.val_token_accuracy = e["val_loss"], e["val_token_accuracy"]


def batch_rows(overrides: list[str]) -> int:
    """Packed rows per optimizer step of a candidate (batch_size × grad_accum)."""
    from tunesmith.config import TrainConfig

    fields: dict[str, Any] = {}
    bd.apply_overrides(fields, overrides)
    cfg = TrainConfig(**fields)
    return cfg.batch_size * cfg.grad_accum


def run_one(name: str, dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.config import load_config
    from tunesmith.run import run_loop

    root = args.out / name / dataset
    root.mkdir(parents=True, exist_ok=True)
    train = list(CANDIDATES[name])
    if args.rows:  # same rows for all; a budget far above the run only times the first steps
        train += [f"max_steps={max(1, args.rows // batch_rows(train))}", "eval_examples=64"]
    bargs = argparse.Namespace(
        budget=args.budget if not args.rows else "3h", cases=args.cases, smoke=False, train=train,
        eval=["rungs=[finetuned]", "probes=false", "forgetting=false"],
    )
    print(f"\n== {name} on {dataset}: {' '.join(CANDIDATES[name]) or '(defaults)'}", flush=True)
    cfg = load_config(bd.write_config(root, dataset, bargs))
    log = SweepLog()
    t0 = time.perf_counter()
    summary = run_loop(cfg, train_log=log, eval_log=bd.eval_log, stage_log=bd.stage_log)
    r = summary.evaluation.results.to_dict()  # the typed EvalResults as results.json holds them
    m = r["ladder"]["finetuned"]["metrics"].get(r["headline"]) or {}
    return {
        "candidate": name, "dataset": dataset, "overrides": train, "budget": bargs.budget,
        "rows": args.rows,
        "cases": r["cases"], "headline": r["headline"], "mean": m.get("mean"), "low": m.get("low"),
        "high": m.get("high"), "steps": summary.model.metrics.get("steps"),
        "seconds_per_step": log.seconds_per_step, "val_loss": log.val_loss,
        "val_token_accuracy": log.val_token_accuracy, "train_seconds": summary.seconds.get("train"),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }


def key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two sweep rows the same measurement."""
    return r["candidate"], r["dataset"], r["budget"], r.get("rows"), r["cases"]


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'candidate':<24} {'dataset':<10} {'steps':>5} {'s/step':>6} {'val loss':>8} "
          f"{'headline':<10} mean (95% CI)")
    for r in sorted(rows, key=lambda r: (r["dataset"], list(CANDIDATES).index(r["candidate"])
                                         if r["candidate"] in CANDIDATES else 99)):
        print(f"{r['candidate']:<24} {r['dataset']:<10} {_f(r['steps'], 'd'):>5} "
              f"{_f(r['seconds_per_step'], '.2f'):>6} {_f(r['val_loss'], '.4f'):>8} {r['headline']:<10} "
              f"{_f(r['mean'], '.3f')} ({_f(r['low'], '.3f')}–{_f(r['high'], '.3f')})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="intents,summaries")
    ap.add_argument("--rows", type=int, default=120,
                    help="packed rows each candidate trains on (max_steps = rows / batch); 0: use --budget")
    ap.add_argument("--budget", default="4m", help="train.time_budget of every run with --rows 0")
    ap.add_argument("--cases", type=int, default=100, help="eval.max_cases (finetuned rung only)")
    ap.add_argument("--configs", default=",".join(CANDIDATES),
                    help=f"comma-separated candidates, run in this order: {', '.join(CANDIDATES)}")
    ap.add_argument("--out", type=Path, required=True, help="project folders and sweep.jsonl")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [n for n in names if n not in CANDIDATES] + [d for d in datasets if d not in bd.DATASETS]
    if bad:
        ap.error(f"unknown candidate or dataset: {bad}")
    args.out.mkdir(parents=True, exist_ok=True)
    ledger = args.out / "sweep.jsonl"
    rows = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
    args.budget = args.budget if not args.rows else "3h"
    done = {key(r) for r in rows}
    for name in names:  # every dataset of one candidate, then the next candidate
        for dataset in datasets:
            if (name, dataset, args.budget, args.rows, args.cases) in done:
                continue
            row = run_one(name, dataset, args)
            rows.append(row)
            with ledger.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print_table(rows)
    what = f"{args.rows} packed rows each" if args.rows else f"train.time_budget {args.budget}"
    print(f"\n== sweep: {what}, {args.cases} cases, finetuned rung only")
    print_table([r for r in rows if key(r)[2:] == (args.budget, args.rows, args.cases)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
