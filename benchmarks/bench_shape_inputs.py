"""Served messages shaped like the training data (``serve.shape_inputs``) vs sent as they came:
the demo's fine-tuned model on fresh month-1 sample tickets, paired.

    python benchmarks/bench_shape_inputs.py DEMO_DIR [--tickets 500] [--seed 23]

DEMO_DIR is a project ``tunesmith demo`` has run in (its latest model version is used). Each
ticket is answered twice by the same engine, greedy, under the eval's JSON grammar: once with
the ticket as a helpdesk sends it (names, emails, addresses, order numbers), once after
``tunesmith.data.pipeline.input_shaper`` (prepare's normalisation and PII scrubbing, the
workspace's salt): what the model saw in training. Prints per-field accuracy against the
generator's ground truth both ways and the paired difference with a 95% bootstrap CI (4,000
resamples), and how many tickets the shaping changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=Path)
    ap.add_argument("--tickets", type=int, default=500)
    ap.add_argument("--seed", type=int, default=23)
    args = ap.parse_args()

    from tunesmith.config import OutputSpec, load_config
    from tunesmith.data.pipeline import input_shaper
    from tunesmith.evaluate.outputs import grammar_for
    from tunesmith.evaluate.pack import load_pack
    from tunesmith.generate.engine import Engine
    from tunesmith.generate.sampling import GenerationConfig
    from tunesmith.sample.triage_month2 import month_traffic
    from tunesmith.workspace import Workspace

    cfg = load_config(args.demo)
    ws = Workspace(cfg.workspace_dir)
    version = ws.list("model")[-1]
    spec = OutputSpec(**load_pack(ws, ws.list("evalpack")[-1].id).settings["output"])
    engine = Engine.load("starter", adapters={"v": version.path}, max_batch_size=cfg.eval.generation.batch_size,
                         system=cfg.model.system_prompt)
    gen = GenerationConfig(max_new_tokens=cfg.eval.generation.max_new_tokens, temperature=0, seed=cfg.seed,
                           grammar=grammar_for(spec))
    tickets = month_traffic(1, args.tickets, seed=args.seed)
    shape = input_shaper(cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"shape_inputs": True})}))
    assert shape is not None
    sent = [t.messages() for t in tickets]
    shaped = [shape(m) for m in sent]
    fields = list(spec.label_fields)

    def right(convs: list[list[dict]]) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        out = engine.generate(convs, gen, adapter="v")
        rows = []
        for g, t in zip(out, tickets, strict=True):
            try:
                answer = json.loads(g.text)
            except ValueError:
                answer = {}
            truth = t.truth.as_dict()
            rows.append([answer.get(f) == truth[f] for f in fields])
        return np.array(rows, dtype=float), time.perf_counter() - t0

    raw, raw_s = right(sent)
    fit, fit_s = right(shaped)
    rng = np.random.default_rng(0)

    def ci(d: np.ndarray) -> str:
        means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(4000)]
        return f"{d.mean():+.3f} [{np.percentile(means, 2.5):+.3f}, {np.percentile(means, 97.5):+.3f}]"

    changed = sum(a != b for a, b in zip(sent, shaped, strict=True))
    print(f"model {version.id[:12]} ({args.demo}); {len(tickets)} month-1 tickets (seed {args.seed}), "
          f"{changed} changed by the shaping; answered in {raw_s:.0f} s as sent, {fit_s:.0f} s shaped")
    print(f"{'field':<14} {'as sent':>8} {'shaped':>8}  shaped - as sent (95% CI)")
    for i, f in enumerate(fields):
        print(f"{f:<14} {raw[:, i].mean():>8.3f} {fit[:, i].mean():>8.3f}  {ci(fit[:, i] - raw[:, i])}")
    print(f"{'fields_mean':<14} {raw.mean():>8.3f} {fit.mean():>8.3f}  {ci(fit.mean(1) - raw.mean(1))}")
    every_raw, every_fit = raw.all(1).astype(float), fit.all(1).astype(float)
    print(f"{'every field':<14} {every_raw.mean():>8.3f} {every_fit.mean():>8.3f}  {ci(every_fit - every_raw)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
