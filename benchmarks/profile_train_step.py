"""Where one LoRA training step of tunesmith's trainer spends its time, by kind of work.

    python benchmarks/profile_train_step.py [--rows 6] [--max-length 1024] [--top 15]

Same setup as ``train_throughput.py`` (the starter, the sample project's train split, LoRA r16
all-linear, bf16 autocast where the CPU has it, packed rows of ``max_length``). Trains one
warm-up step, times ``--rows`` steps (one packed row each), then runs one more under the torch
profiler and prints self CPU time grouped into matmul / attention / casts / dropout masks /
other elementwise / optimizer, plus the top operators.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_bench import BenchSpec, base_model, load_data, lora_model, tokenizer, tunesmith_config
from train_throughput import sample_snapshot

KINDS = (  # (kind, substrings of aten op names), first match wins
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("attention", ("scaled_dot_product", "flash_attention")),
    ("casts / copies", ("aten::copy_", "aten::_to_copy", "aten::to")),
    ("dropout masks", ("aten::random_", "aten::uniform_", "aten::bernoulli", "aten::ge")),
    ("optimizer", ("Optimizer", "adam", "_foreach")),
)


def kind_of(name: str) -> str:
    for kind, needles in KINDS:
        if any(n in name for n in needles):
            return kind
    return "other (elementwise, norms, rotary, loss, ...)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6, help="timed steps (one packed row each)")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--sample-dir", type=Path, default=Path(tempfile.gettempdir()) / "tunesmith-bench-sample")
    args = ap.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from tunesmith.train.trainer import Trainer

    spec = BenchSpec(snapshot=str(sample_snapshot(args.sample_dir)), examples=(args.rows + 2) * 8,
                     val_examples=1, max_length=args.max_length)
    tok = tokenizer()
    train, _ = load_data(spec, tok)
    model = lora_model(spec, base_model())
    cfg = tunesmith_config(spec, scheduler="constant")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, cfg, train=train, validation=[], pad_id=tok.pad_token_id, seed=spec.seed,
                          run_dir=Path(run_dir))
        batches = [trainer._collate(g) for g in trainer._epoch_groups(0)]
        if len(batches) < args.rows + 2:
            raise SystemExit(f"only {len(batches)} packed rows; lower --rows")
        trainer._train_step([batches[0]])  # warm-up
        rates = []
        for batch in batches[1 : args.rows + 1]:
            t0 = time.perf_counter()
            trainer._train_step([batch])
            rates.append(int(batch["_tokens"]) / (time.perf_counter() - t0))
        print(f"tokens/s per step: {[round(r) for r in rates]}, median {sorted(rates)[len(rates) // 2]:.0f} "
              f"({torch.get_num_threads()} threads)")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer._train_step([batches[args.rows + 1]])

    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind_of(e.key)] += e.self_cpu_time_total
    print(f"\none profiled step ({int(batches[args.rows + 1]['_tokens'])} tokens): {total / 1e6:.2f} s self CPU time")
    for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:48s} {us / 1e6:6.2f} s  {us / total:6.1%}")
    print(f"\ntop {args.top} operators by self CPU time:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"  {e.key[:60]:60s} {e.self_cpu_time_total / 1e6:6.3f} s  {e.count:6d} calls")


if __name__ == "__main__":
    main()
