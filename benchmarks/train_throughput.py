"""LoRA training throughput: tunesmith's trainer vs transformers' Trainer and TRL's SFTTrainer.

    python benchmarks/train_throughput.py [--examples 96] [--val-examples 64] [--max-length 1024]
        [--only tunesmith,tunesmith_noshare,tunesmith_top10,tunesmith_full_top10,hf_trainer,trl_sft] [--threads N] [--seed 13] [--sample-dir DIR]

Same model (the starter, SmolLM2-135M-Instruct, float32 weights), same data (the first N train
examples of the support-triage sample project's snapshot, tokenised once by tunesmith, so the
labels are identical: assistant answer + end-of-turn only), same LoRA (r 16, alpha 32, dropout
0.05, all-linear, same seeded init), same optimiser settings (AdamW, lr, the same cosine
schedule without warmup, clip 1.0, no weight decay), one epoch, bf16 autocast on CPUs with
native bf16 (all three), no gradient checkpointing (TRL's default is on; turned off so all three
do the same work), sdpa attention. About the same tokens per optimizer step: one packed row of
``max_length`` for the packers, ``--examples-per-step`` padded examples for the plain Trainer.

  * tunesmith:  ``tunesmith.train.trainer.Trainer`` with packing (best-fit-decreasing rows,
                attention per packed example, logits only at trained positions) and its
                default shared-prefix packing (one copy of the system prompt per row). Its rows
                are shortened until the epoch has as many rows (optimizer steps, ~3.4 examples
                each) as plain packing, so every packer takes the same number of steps.
                Tokens/s counts the examples' tokens (prefix included, as the others see them);
                the FLOP/s utilisation counts only the positions it computed.
  * tunesmith_noshare: the same with ``share_prefix: false``.
  * tunesmith_top10: the same with LoRA on the last 10 of 30 layers (``train.lora.top_layers``):
                autograd stops below them. Not the same LoRA as the others: compare its speed
                and its validation loss.
  * tunesmith_full_top10: full fine-tuning of the last 10 layers and the final norm
                (``train.full.top_layers``, lr ``--full-lr``, the demo's 6e-4); no LoRA at all.
  * hf_trainer: ``transformers.Trainer`` + ``peft.get_peft_model``, ``DataCollatorForSeq2Seq``
                dynamic padding (to the longest example of each random batch).
  * trl_sft:    ``trl.SFTTrainer`` with ``packing=True`` (its default BFD strategy: padding-free
                rows whose example boundaries come from position ids), given the same
                pre-tokenised ``input_ids``/``labels`` (so its loss mask equals ours).

Each contender runs in a fresh process, so peak RSS (``ru_maxrss``, read right after training)
is its own. Tokens/s counts the non-padding tokens trained on per second of the training call
(model load, tokenisation and trainer construction are reported separately); tok/cpu-s divides
by the process's CPU time instead, which other jobs on shared cores disturb less. Validation
loss is computed afterwards by one function for all (``_train_bench.validation_loss``: a fresh
base model plus the contender's adapter weights). FLOP/s utilisation divides 4·N + attention
FLOPs per token (see ``_train_bench.flops_per_token``) by the bf16 matmul rate measured in
this run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_bench import (
    CONTENDERS,
    BenchSpec,
    adapter_state,
    base_model,
    bf16_autocast,
    cpu_seconds,
    flops_per_token,
    load_data,
    lora_model,
    matmul_rate,
    model_config,
    peak_rss_mib,
    tokenizer,
    tunesmith_config,
    validation_loss,
)

# --------------------------------------------------------------------------- contenders
# Each takes (spec, peft model, tokenizer, train examples) and trains one epoch in place; the
# returned dict has at least "train_seconds" and "tokens" (non-padding tokens it was fed).


def run_tunesmith(spec: BenchSpec, model: Any, tok: Any, train: list, *, share_prefix: bool = True) -> dict[str, Any]:
    from tunesmith.train.packing import pack_examples
    from tunesmith.train.trainer import Trainer, precision_for

    row_length = spec.max_length
    if share_prefix:
        # Same examples per optimizer step as the other packers: a row with a shared prefix
        # holds ~2x the examples, so shorten it until the epoch has as many rows (steps) as
        # plain packing gives; the validation loss then compares equal numbers of steps.
        target = len(pack_examples(train, max_length=spec.max_length).rows)
        while row_length > 64 and len(pack_examples(train, max_length=row_length - 16, share_prefix=True).rows) <= target:
            row_length -= 16
    cfg = tunesmith_config(spec, row_length=row_length, share_prefix=share_prefix)
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        trainer = Trainer(model, cfg, train=train, validation=[], pad_id=tok.pad_token_id, seed=spec.seed,
                          run_dir=Path(run_dir))
        setup = time.perf_counter() - t0
        groups = trainer._epoch_groups(0)  # the epoch's micro-batches of packed rows
        positions = sum(len(g) * max(len(r) for r in g) for g in groups)
        t0 = time.perf_counter()
        fit = trainer.fit()
        seconds = time.perf_counter() - t0
    steps = [h for h in fit.state.history if "trained_tokens" in h]  # step events (evals carry "event")
    return {"train_seconds": seconds, "setup_seconds": setup, "tokens": fit.state.tokens_seen, "positions": positions,
            "steps": fit.state.step, "final_train_loss": steps[-1]["loss"], "row_length": row_length,
            "precision": f"autocast {precision_for(cfg)}" if precision_for(cfg) != "no" else "fp32"}


def run_tunesmith_noshare(spec: BenchSpec, model: Any, tok: Any, train: list) -> dict[str, Any]:
    return run_tunesmith(spec, model, tok, train, share_prefix=False)


def _hf_args(spec: BenchSpec, out_dir: str, batch: int) -> dict[str, Any]:
    """TrainingArguments shared by the two Hugging Face contenders."""
    return {
        "output_dir": out_dir, "per_device_train_batch_size": batch, "num_train_epochs": 1,
        "learning_rate": spec.lr, "lr_scheduler_type": "cosine", "warmup_steps": spec.warmup_ratio,
        "weight_decay": 0.0, "max_grad_norm": 1.0, "bf16": bf16_autocast(), "use_cpu": True,
        "gradient_checkpointing": False, "save_strategy": "no", "report_to": [], "seed": spec.seed,
        "logging_steps": 10**6, "disable_tqdm": True, "dataloader_num_workers": 0,
    }


class _CountingCollator:
    """Wraps a collator to count the non-padding tokens (and all positions) it hands the model."""

    def __init__(self, inner: Any, count: Any):
        self.inner, self.count, self.tokens, self.positions = inner, count, 0, 0

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        self.tokens += int(self.count(batch))
        self.positions += batch["input_ids"].numel()
        return batch


def _train_hf(trainer: Any, counter: _CountingCollator, batch: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t0
    return {"train_seconds": seconds, "tokens": counter.tokens, "positions": counter.positions,
            "steps": out.global_step,
            "final_train_loss": out.training_loss,
            "precision": "autocast bf16" if trainer.args.bf16 else "fp32"}


def run_hf_trainer(spec: BenchSpec, model: Any, tok: Any, train: list) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    ds = Dataset.from_dict({"input_ids": [e.input_ids for e in train], "labels": [e.labels for e in train],
                            "attention_mask": [[1] * len(e) for e in train]})
    collator = _CountingCollator(DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
                                 lambda b: b["attention_mask"].sum())
    with tempfile.TemporaryDirectory() as out_dir:
        t0 = time.perf_counter()
        args = TrainingArguments(**_hf_args(spec, out_dir, spec.examples_per_step))
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
        setup = time.perf_counter() - t0
        return {**_train_hf(trainer, collator, spec.examples_per_step), "setup_seconds": setup}


def run_trl_sft(spec: BenchSpec, model: Any, tok: Any, train: list) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    # Pre-tokenised: TRL skips its own rendering and keeps our labels (it also masks the first
    # token of every packed example, which ours never trains anyway).
    ds = Dataset.from_dict({"input_ids": [e.input_ids for e in train], "labels": [e.labels for e in train]})
    with tempfile.TemporaryDirectory() as out_dir:
        t0 = time.perf_counter()
        args = SFTConfig(**_hf_args(spec, out_dir, spec.rows_per_step), packing=True,
                         max_length=spec.max_length)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        # padding-free rows: every position of input_ids is a real token
        trainer.data_collator = _CountingCollator(trainer.data_collator, lambda b: b["input_ids"].numel())
        setup = time.perf_counter() - t0
        result = _train_hf(trainer, trainer.data_collator, spec.rows_per_step)
        return {**result, "setup_seconds": setup, "packing": args.packing_strategy}


RUNNERS = {"tunesmith": run_tunesmith, "tunesmith_noshare": run_tunesmith_noshare,
           "tunesmith_top10": run_tunesmith, "tunesmith_full_top10": run_tunesmith, "hf_trainer": run_hf_trainer, "trl_sft": run_trl_sft}


# --------------------------------------------------------------------------- one contender
def child(name: str, spec: BenchSpec, out: Path) -> None:
    """Load, train one epoch, measure; then score the adapter with the shared function."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    if name == "tunesmith_top10":
        spec.top_layers = 10  # the trade train.lora.top_layers makes: faster steps, fewer layers learn
    if name == "tunesmith_full_top10":
        spec.full_top_layers = 10  # train.full.top_layers: those layers' whole weights learn, no LoRA
    t0 = time.perf_counter()
    tok = tokenizer()
    train, val = load_data(spec, tok)
    t1 = time.perf_counter()
    model = lora_model(spec, base_model())
    t2 = time.perf_counter()
    rss_loaded = psutil.Process().memory_info().rss / 2**20
    load_avg, cpu0 = os.getloadavg()[0], cpu_seconds()
    result = RUNNERS[name](spec, model, tok, train)
    result |= {"peak_rss_mib": peak_rss_mib(), "rss_after_load_mib": rss_loaded, "cpu_seconds": cpu_seconds() - cpu0,
               "tokenize_seconds": t1 - t0, "load_seconds": t2 - t1,
               "load_avg": [load_avg, os.getloadavg()[0]]}
    state = adapter_state(model)
    del model
    gc.collect()
    result |= validation_loss(spec, state, val, tok.pad_token_id)
    out.write_text(json.dumps(result))


def run_child(name: str, spec_path: Path) -> dict[str, Any]:
    out = spec_path.with_name(f"{name}.json")
    cmd = [sys.executable, __file__, "--child", name, "--spec", str(spec_path), "--result", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{name} failed (exit {proc.returncode})")
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- parent
def sample_snapshot(folder: Path) -> Path:
    """The support-triage sample project (seed 7) prepared into a snapshot; reused if present."""
    from tunesmith.config import load_config
    from tunesmith.data.pipeline import prepare
    from tunesmith.sample import generate_support_triage

    if not (folder / "tunesmith.yaml").exists():
        generate_support_triage(folder, seed=7)
    return prepare(load_config(folder)).path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=96, help="training examples (one epoch)")
    ap.add_argument("--val-examples", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--examples-per-step", type=int, default=4, help="hf_trainer batch size")
    ap.add_argument("--rows-per-step", type=int, default=1, help="packed rows per step (tunesmith, trl_sft)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--full-lr", type=float, default=6e-4, help="learning rate of tunesmith_full_top10")
    ap.add_argument("--seed", type=int, default=13, help="LoRA init, data order and dropout seed")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per contender (0: torch's default)")
    ap.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    ap.add_argument("--sample-dir", type=Path, default=Path(tempfile.gettempdir()) / "tunesmith-bench-sample")
    ap.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, BenchSpec.load(args.spec), args.result)
        return
    spec = BenchSpec(snapshot=str(sample_snapshot(args.sample_dir)), examples=args.examples,
                     val_examples=args.val_examples, max_length=args.max_length, lr=args.lr, full_lr=args.full_lr,
                     examples_per_step=args.examples_per_step, rows_per_step=args.rows_per_step,
                     threads=args.threads, seed=args.seed)
    run_all(spec, [c for c in args.only.split(",") if c])


def run_all(spec: BenchSpec, names: list[str]) -> None:
    if spec.threads:
        torch.set_num_threads(spec.threads)
    tok = tokenizer()  # converts the starter GGUF once (cached) before any timing
    train, val = load_data(spec, tok)
    lengths = [len(e) for e in train]
    print(f"data: {len(train)} train examples, {sum(lengths)} tokens ({min(lengths)}-{max(lengths)}, "
          f"mean {sum(lengths) / len(lengths):.0f}), {sum(e.trainable() for e in train)} trained; "
          f"{len(val)} validation examples")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 autocast: {bf16_autocast()}")
    peaks = {"bf16": matmul_rate(torch.bfloat16), "fp32": matmul_rate(torch.float32)}
    print(f"matmul ceiling (2048², best of a 3 s loop): bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s, "
          f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec.save(spec_path)
        results = {}
        for name in names:
            results[name] = run_child(name, spec_path)
            r = results[name]
            print(f"  {name}: {r['train_seconds']:.1f} s, {r['tokens'] / r['train_seconds']:.0f} tokens/s, "
                  f"load avg {r['load_avg'][0]:.1f}->{r['load_avg'][1]:.1f}", flush=True)
    base = validation_loss(spec, None, val, tok.pad_token_id)  # the untrained starter
    report(spec, results, sum(lengths), flops_per_token(model_config(), lengths), peaks, base)


def report(spec: BenchSpec, results: dict[str, dict], tokens: int, flops: tuple[float, int],
           peaks: dict[str, float], base: dict[str, float]) -> None:
    per_token, n_params = flops
    print(f"\n{spec.examples} examples, {tokens} tokens, max_length {spec.max_length}, LoRA r{spec.r} "
          f"alpha {spec.alpha} all-linear, lr {spec.lr}; FLOPs/token = 4·N + attention = "
          f"{per_token / 1e6:.0f} M (N = {n_params / 1e6:.1f} M)")
    print(f"{'contender':17s} {'tokens/s':>8s} {'vs hf':>6s} {'vs trl':>6s} {'tok/cpu-s':>9s} {'train s':>7s} "
          f"{'steps':>5s} {'peak RSS':>9s} {'val loss':>8s} {'val acc':>7s} {'bf16 util':>9s}  precision")
    rate = {n: r["tokens"] / r["train_seconds"] for n, r in results.items()}
    for name, r in results.items():
        if r["tokens"] != tokens:
            print(f"  !! {name} was fed {r['tokens']} tokens, expected {tokens}")
        ratio = {k: f"{rate[name] / rate[k]:.2f}x" if k in rate else "-" for k in ("hf_trainer", "trl_sft")}
        # FLOPs actually needed: computed positions when a shared prefix saves some, real
        # (non-padding) tokens otherwise
        util = min(r["positions"], r["tokens"]) / r["train_seconds"] * per_token / peaks["bf16"]
        print(f"{name:17s} {rate[name]:8.0f} {ratio['hf_trainer']:>6s} {ratio['trl_sft']:>6s} "
              f"{r['tokens'] / r['cpu_seconds']:9.0f} {r['train_seconds']:7.1f} {r['steps']:5d} "
              f"{r['peak_rss_mib']:7.0f} M {r['val_loss']:8.4f} {r['val_token_accuracy']:7.3f} "
              f"{util:9.1%}  {r['precision']}")
    print(f"{'base model':17s} {'':>8s} {'':>6s} {'':>6s} {'':>9s} {'':>7s} {'':>5s} {'':>9s} "
          f"{base['val_loss']:8.4f} {base['val_token_accuracy']:7.3f}   (untrained)")
    print("\npadding (positions computed / real tokens), setup s (trainer construction), model load s, "
          "tokenise s, RSS after load, load average before->after training:")
    for n, r in results.items():
        print(f"  {n:17s} {r['positions'] / r['tokens']:.3f}  {r['setup_seconds']:4.1f}  {r['load_seconds']:4.1f}  "
              f"{r['tokenize_seconds']:4.1f}  {r['rss_after_load_mib']:5.0f} MiB  "
              f"{r['load_avg'][0]:.1f}->{r['load_avg'][1]:.1f}")


if __name__ == "__main__":
    main()
