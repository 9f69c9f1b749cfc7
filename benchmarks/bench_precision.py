"""Which precision trains and answers faster on this CPU: float32 vs bf16 autocast, and what
``precision: auto`` picks.

    python benchmarks/bench_precision.py [--examples 48] [--prompts 32] [--sample-dir DIR]

1. The probe ``auto`` uses (models/precision.py): GFLOP/s of the starter's MLP matmul in each dtype.
2. Training: the demo's method (full fine-tuning of the starter's last 10 layers, lr 6e-4, one
   packed row of 1,024 tokens per step) on the first ``--examples`` train examples of the
   support-triage sample (seed 7), once with ``train.precision: fp32`` and once with ``bf16``,
   each from the same fresh model. Tokens/s of the training call.
3. Generation: the starter answers ``--prompts`` sample tickets (greedy, 32 new tokens, batch 32)
   in an fp32 engine and in a bf16 engine (weights stored in bf16). Seconds per answer, and
   how many answers are the same.

Prints each rate, the bf16/fp32 ratios and the choice of ``auto`` on this machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_bench import BenchSpec, base_model, load_data, lora_model, tokenizer, tunesmith_config
from train_throughput import sample_snapshot


def train_rate(spec: BenchSpec, tok, train, precision: str) -> float:
    from tunesmith.train.trainer import Trainer

    model = lora_model(spec, base_model())
    cfg = tunesmith_config(spec).model_copy(update={"precision": precision})
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, cfg, train=train, validation=[], pad_id=tok.pad_token_id, seed=spec.seed,
                          run_dir=Path(run_dir))
        t0 = time.perf_counter()
        fit = trainer.fit()
        return fit.state.tokens_seen / (time.perf_counter() - t0)


def answer_rate(convs, bf16: bool) -> tuple[float, list[str]]:
    from tunesmith.generate import Engine, GenerationConfig

    engine = Engine.load("starter", device="cpu", max_batch_size=32, bf16_autocast=bf16)
    engine.generate(convs[:4], GenerationConfig(max_new_tokens=8))  # warm-up
    t0 = time.perf_counter()
    out = engine.generate(convs, GenerationConfig(max_new_tokens=32))
    return (time.perf_counter() - t0) / len(convs), [g.text for g in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--sample-dir", type=Path, default=Path(tempfile.gettempdir()) / "tunesmith-bench-sample")
    args = ap.parse_args()

    from tunesmith.models.precision import cpu_bf16_pays, cpu_flags, matmul_gflops

    native = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"})
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16 flags: {native or 'none'}")
    print(f"matmul probe (512x576 @ 576x1536): fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s: "
          f"bf16/fp32 {bf16 / fp32:.2f}x", flush=True)

    spec = BenchSpec(snapshot=str(sample_snapshot(args.sample_dir)), examples=args.examples, val_examples=0,
                     full_top_layers=10)
    tok = tokenizer()
    train, _ = load_data(spec, tok)
    rates = {p: train_rate(spec, tok, train, p) for p in ("fp32", "bf16")}
    print(f"training ({len(train)} examples, full FT of the top 10 layers): fp32 {rates['fp32']:.0f} tok/s, "
          f"bf16 {rates['bf16']:.0f} tok/s: bf16/fp32 {rates['bf16'] / rates['fp32']:.2f}x", flush=True)

    from tunesmith.data.pipeline import load_split

    examples = load_split(Path(spec.snapshot), "test")[: args.prompts]
    convs = [[m for m in ex.messages if m["role"] != "assistant"] for ex in examples]
    (s32, a32), (s16, a16) = answer_rate(convs, False), answer_rate(convs, True)
    same = sum(a == b for a, b in zip(a32, a16, strict=True))
    print(f"generation ({len(convs)} tickets, 32 new tokens): fp32 {s32:.3f} s/answer, bf16 {s16:.3f} s/answer: "
          f"bf16 speed {s32 / s16:.2f}x fp32; {same}/{len(convs)} answers the same")
    print(f"precision: auto picks {'bf16' if cpu_bf16_pays() else 'fp32'} on this machine")


if __name__ == "__main__":
    main()
