"""The default config on three tasks: prepare -> train -> eval with ``train.time_budget``.

    python benchmarks/bench_defaults.py [--datasets sample,intents,summaries] [--budget 15m]
                                        [--cases 200] [--out DIR] [--smoke]
                                        [--train KEY=VALUE ...] [--eval KEY=VALUE ...]

What is measured is tunesmith's *defaults*: each project's ``tunesmith.yaml`` sets only its data,
the task's output spec, its rungs, ``train.time_budget`` (``--budget``) and ``eval.max_cases``
(``--cases``); the model (``starter``, SmolLM2-135M-Instruct), LoRA, learning rate, packing,
generation, probes, forgetting checks and gate are whatever tunesmith defaults to.

The datasets:

``sample``
    The support-triage sample project (``tunesmith init --template support-triage``, seed 7):
    its three data sources and data settings, its knowledge base and its ``eval.output`` (JSON
    with three label fields, headline ``fields_mean``). Its hand-tuned ``train:`` and the rest
    of its ``eval:`` (rungs, few-shot/RAG sizes, bf16 generation, gate) are *not* used: the
    point is the defaults, so the rungs are the default five.
``intents``
    40 banking intents, ~3,000 generated messages in a CSV (``text,category``) mapped as a
    table source; ``eval.output: {kind: label}`` with the label set inferred from the training
    answers and the default constrained decoding; rungs zero_shot, few_shot, finetuned,
    finetuned_fewshot. The system prompt names the task but not the labels: constrained
    decoding already keeps every rung (zero-shot included) inside the label set, so the base
    model is not deprived of the label names, and a 40-label list would add ~250 tokens to
    every prompt, trained and generated alike. What a team's own instructions rarely carry —
    the label set — is what the fine-tune must learn from the data.
``summaries``
    ~2,000 generated support tickets with a one-sentence summary built from the generator's
    ground truth (``Customer <who> reports <issue> with <product>; wants <resolution>.``),
    OpenAI chat JSONL; ``eval.output: {kind: text, headline: rouge_l}``; rungs zero_shot,
    few_shot, finetuned. The system prompt gives the summary's form, so the baselines know it.

Each project runs in-process through ``tunesmith.run.run_loop`` in its own folder (``--out``,
default a temporary folder removed at the end; with ``--out`` a second run reuses every stage).
The baselines are the ladder's base-model rungs of the same run, on the same frozen cases. At
the end, one table per dataset: each rung's headline mean with its 95% CI, the fine-tune's lead
over the best baseline (paired bootstrap CI) and their ratio, the recommendation, and the
seconds of prepare / train / eval.

``--train KEY=VALUE`` / ``--eval KEY=VALUE`` (repeatable; dotted keys nest, values are YAML:
``--train batch_size=1 --train lora.top_layers=10 --eval rungs=[finetuned]``) set one field of the
written config on top of the above — for ``benchmarks/sweep_defaults.py``, which compares
candidate defaults this way; without them the config is the defaults.

``--smoke`` checks the wiring: ``intents`` only, ``--budget 1m --cases 20``, 32 validation
examples, 16 new tokens, and the probes and forgetting checks off. The budget is re-planned
only after 6 timed steps (``CALIBRATION_STEPS`` in ``train/trainer.py``), so where one step
takes longer than budget / 6 (a busy 2-core CPU) training runs past ``--budget``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _datasets import (
    INTENT_INSTRUCTIONS,
    generate_intents,
    write_intents,
    write_summaries,
)

from tunesmith.config import load_config, parse_duration

DATASETS = ("sample", "intents", "summaries")


# --------------------------------------------------------------------------- the projects
def sample_project(root: Path) -> dict[str, Any]:
    """The sample project's data and output spec; everything else default."""
    from tunesmith.sample import TEMPLATES

    TEMPLATES["support-triage"](root, seed=7, overwrite=True)  # --out: a second run reuses it
    own = yaml.safe_load((root / "tunesmith.yaml").read_text(encoding="utf-8"))
    (root / "tunesmith.yaml").rename(root / "tunesmith.sample.yaml")  # kept for reference
    return {"project": "bench-sample", "data": own["data"], "eval": {"output": own["eval"]["output"]}}


def intents_project(root: Path) -> dict[str, Any]:
    info = write_intents(root)
    return {
        "project": "bench-intents",
        "data": {"sources": [{
            "path": str(info["path"].relative_to(root)), "format": "table",
            "columns": {"prompt": "text", "completion": "category"},
            "system": INTENT_INSTRUCTIONS,
        }]},
        "eval": {"rungs": ["zero_shot", "few_shot", "finetuned", "finetuned_fewshot"],
                 "output": {"kind": "label"}},
    }


def held_out_intents(root: Path, n: int, *, seed: int = 14) -> Path:
    """``n`` more intent queries for the eval pack (``--extra-cases``), from another seed of the
    generator: none equal (after lowercasing and dropping punctuation) or near-duplicate
    (tunesmith's MinHash at the prepare stage's settings) to any of the dataset's records, so
    no case was seen in training. Written as ``data/intents-held-out.csv``."""
    import csv

    from _datasets import _key

    from tunesmith.config import NearDedupConfig
    from tunesmith.data.minhash import NearDuplicateIndex, signatures

    with (root / "data" / "intents.csv").open(encoding="utf-8", newline="") as fh:
        known = [r["text"] for r in csv.DictReader(fh)]
    seen = {_key(t) for t in known}
    fresh = [r for r in generate_intents(3 * n, seed) if _key(r["text"]) not in seen]
    cfg = NearDedupConfig()
    index = NearDuplicateIndex(cfg)
    index.add(signatures(known + [r["text"] for r in fresh], cfg))
    roots = index.clusters()  # the smallest index of each cluster: a dataset record's when it has one
    kept = [r for i, r in enumerate(fresh) if roots[len(known) + i] == len(known) + i]
    if len(kept) < n:
        raise SystemExit(f"--extra-cases {n}: only {len(kept)} held-out queries are unlike the dataset")
    print(f"  held-out queries: {len(fresh)} generated unlike the dataset's text, {len(kept)} not near-duplicates "
          f"of it or of each other; {n} used", flush=True)
    path = root / "held-out" / "intents.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in kept[:n]:
            fh.write(json.dumps({"messages": [{"role": "system", "content": INTENT_INSTRUCTIONS},
                                              {"role": "user", "content": r["text"]},
                                              {"role": "assistant", "content": r["category"]}]}) + "\n")
    return path


def summaries_project(root: Path) -> dict[str, Any]:
    info = write_summaries(root)
    return {
        "project": "bench-summaries",
        "data": {"sources": [{"path": str(info["path"].relative_to(root)), "format": "chat"}]},
        "eval": {"rungs": ["zero_shot", "few_shot", "finetuned"],
                 "output": {"kind": "text", "headline": "rouge_l"}},
    }


PROJECTS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "sample": sample_project, "intents": intents_project, "summaries": summaries_project,
}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``lora.top_layers=10`` -> (["lora", "top_layers"], 10); the value is read as YAML."""
    key, sep, value = text.partition("=")
    path = [k for k in key.strip().split(".") if k]
    if not sep or not path:
        raise ValueError(f"{text!r}: expected KEY=VALUE (e.g. batch_size=1, lora.top_layers=10)")
    return path, yaml.safe_load(value)


def apply_overrides(section: dict[str, Any], overrides: list[str]) -> None:
    for text in overrides:
        path, value = parse_override(text)
        node = section
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"{text!r}: {key} is not a section")
        node[path[-1]] = value


def write_config(root: Path, name: str, args: argparse.Namespace) -> Path:
    cfg = PROJECTS[name](root)
    cfg["model"] = {"base": "starter"}
    cfg["train"] = {"time_budget": args.budget}
    cfg["eval"]["max_cases"] = args.cases
    if getattr(args, "extra_cases", 0):
        cfg["eval"]["extra_cases"] = [str(held_out_intents(root, args.extra_cases).relative_to(root))]
    if args.smoke:
        cfg["train"]["eval_examples"] = 32  # the validation pass is part of the budget
        cfg["eval"].update({"generation": {"max_new_tokens": 16}, "probes": False, "forgetting": False})
    apply_overrides(cfg["train"], getattr(args, "train", None) or [])
    apply_overrides(cfg["eval"], getattr(args, "eval", None) or [])
    path = root / "tunesmith.yaml"
    header = (f"# written by benchmarks/bench_defaults.py: tunesmith's defaults on the {name} "
              "dataset, with a training time budget\n")
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=100),
                    encoding="utf-8")
    return path


# --------------------------------------------------------------------------- progress lines
def _say(line: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {line}", flush=True)


def stage_log(event: dict[str, Any]) -> None:
    if event["event"] == "stage_start":
        _say(f"{event['stage']} …")
    else:
        _say(f"{event['stage']} done in {event['seconds']} s" + (" (reused)" if event["reused"] else ""))


class TrainLog:
    """One line per phase of training, and a step line at most every ``every`` seconds."""

    def __init__(self, every: float = 60.0):
        self.every, self.last = every, 0.0

    def __call__(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "preflight":
            _say(f"train pre-flight {e['split']}: {e['examples']} examples, {e['tokens']:,} tokens, "
                 f"{e['trainable_tokens']:,} trained, longest {e['longest']}")
        elif kind == "model_ready":
            _say(f"model ready in {e['seconds']} s: {e['trainable_params']:,} of {e['total_params']:,} "
                 f"parameters train (precision {e['precision']})")
        elif kind == "budget":
            _say(f"time budget {e['budget_seconds']:.0f} s: {e['seconds_per_step']:.2f} s/step, "
                 f"{e['eval_seconds']:.0f} s per validation -> {e['total_steps']} steps "
                 f"(planned {e['planned_steps']})")
        elif kind == "step":
            now = time.perf_counter()
            if now - self.last >= self.every or e["step"] == e["total_steps"]:
                self.last = now
                _say(f"step {e['step']}/{e['total_steps']} loss {e['loss']:.4f}")
        elif kind == "eval":
            _say(f"step {e['step']}: val loss {e['val_loss']:.4f}, token accuracy "
                 f"{e['val_token_accuracy']:.3f}" + (" (early stop)" if e.get("stopped_early") else ""))


def eval_log(e: dict[str, Any]) -> None:
    kind = e.get("event")
    if kind == "eval_start":
        _say(f"eval pack {e['pack']}: {e['cases']} cases x {len(e['rungs'])} rungs")
    elif kind == "rung_done":
        head = e["headline"]
        _say(f"{e['rung']:<18} done in {e['seconds']} s, headline "
             f"{'n/a' if head is None else f'{head:.3f}'}")
    elif kind == "phase_done":
        _say(f"{e['phase'].replace('_', ' '):<18} done in {e['seconds']} s")


# --------------------------------------------------------------------------- one dataset
def run_dataset(name: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.run import run_loop

    root.mkdir(parents=True, exist_ok=True)
    print(f"\n== {name}: {root}", flush=True)
    t0 = time.perf_counter()
    cfg = load_config(write_config(root, name, args))
    _say(f"project written in {time.perf_counter() - t0:.1f} s")
    summary = run_loop(cfg, train_log=TrainLog(), eval_log=eval_log, stage_log=stage_log)
    counts = summary.snapshot.manifest.get("counts", {})
    r = summary.evaluation.results.to_dict()  # the typed results as results.json holds them
    head = r["headline"]
    ladder = {rung: v["metrics"].get(head) or {} for rung, v in r["ladder"].items()}
    return {
        "dataset": name, "headline": head, "cases": r["cases"], "ladder": ladder,
        "lead": r.get("finetuned_vs_best_baseline"), "recommendation": r["recommendation"],
        "passed": summary.evaluation.passed, "seconds": dict(summary.seconds),
        "steps": summary.model.metrics.get("steps"), "counts": counts,
        "report": str(summary.evaluation.path / "report.html"),
    }


# --------------------------------------------------------------------------- the table
def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def print_table(results: list[dict[str, Any]], args: argparse.Namespace, keep: bool) -> None:
    print(f"\n== tunesmith defaults, train.time_budget {args.budget}, eval.max_cases {args.cases} "
          "(95% CIs; the baselines are the same run's base-model rungs)")
    if args.train or args.eval:
        print("   overrides: " + " ".join([f"train.{t}" for t in args.train] + [f"eval.{t}" for t in args.eval]))
    print(f"{'dataset':<10} {'rung':<18} {'headline':<12} mean (95% CI)")
    for res in results:
        for rung, m in res["ladder"].items():
            ci = f"{_num(m.get('mean'))} ({_num(m.get('low'))}–{_num(m.get('high'))})"
            print(f"{res['dataset']:<10} {rung:<18} {res['headline']:<12} {ci}")
        lead = res["lead"]
        if lead and lead.get("diff") is not None:
            base = res["ladder"].get(lead["baseline"], {}).get("mean")
            ft = res["ladder"].get(lead["rung"], {}).get("mean")
            ratio = f"{ft / base:.2f}x" if base and ft is not None else "n/a (baseline 0)"
            print(f"{'':<10} lead {lead['rung']} − {lead['baseline']}: {lead['diff']:+.3f} "
                  f"[{lead['low']:+.3f}, {lead['high']:+.3f}] on {lead['n']} cases; ratio {ratio}")
        else:
            print(f"{'':<10} lead: n/a (no fine-tuned rung or no baseline scored)")
        print(f"{'':<10} recommendation: {res['recommendation']}")
        s, c = res["seconds"], res["counts"]
        total = sum(s.values())
        print(f"{'':<10} seconds: prepare {s.get('prepare')}, train {s.get('train')} "
              f"({res['steps']} steps), eval {s.get('eval')}; total {total:.0f} s "
              f"({total / 60:.1f} min); gate {'passed' if res['passed'] else 'failed'}")
        if c:
            print(f"{'':<10} data: read {c.get('read')}, kept {c.get('kept')} {c.get('splits')}, "
                  f"dropped {c.get('dropped_by_reason') or 0}")
        if keep:
            print(f"{'':<10} report: {res['report']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help=f"comma-separated subset of {', '.join(DATASETS)}")
    ap.add_argument("--budget", default="15m", help="train.time_budget (e.g. 15m, 900s)")
    ap.add_argument("--cases", type=int, default=200, help="eval.max_cases")
    ap.add_argument("--extra-cases", type=int, default=0, metavar="N",
                    help="intents: N more held-out test cases from another seed of the generator, none "
                         "equal or near-duplicate to the dataset (a CI narrow enough to separate close rungs)")
    ap.add_argument("--out", type=Path, help="keep the projects here (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true",
                    help="intents only, --budget 1m --cases 20, short validation and answers, "
                         "no probes/forgetting")
    ap.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                    help="set a train field on top of the defaults (repeatable; dotted keys nest)")
    ap.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                    help="set an eval field (repeatable), e.g. rungs=[finetuned]")
    args = ap.parse_args(argv)
    for text in args.train + args.eval:
        try:
            parse_override(text)
        except ValueError as exc:
            ap.error(str(exc))
    if args.smoke:
        args.datasets, args.budget, args.cases = "intents", "1m", 20
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if args.extra_cases and names != ["intents"]:
        ap.error("--extra-cases: intents only (its generator makes the held-out queries)")
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        ap.error(f"--datasets: unknown {unknown}; choose from {', '.join(DATASETS)}")
    try:
        parse_duration(args.budget)
    except ValueError as exc:
        ap.error(f"--budget: {exc}")

    base = args.out or Path(tempfile.mkdtemp(prefix="bench-defaults-"))
    results = []
    started = time.perf_counter()
    try:
        for name in names:
            results.append(run_dataset(name, base / name, args))
    finally:
        if results:
            print_table(results, args, keep=args.out is not None)
        if args.out is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nbench_defaults finished in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
