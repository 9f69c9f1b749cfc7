"""Would mixing adapters inside one batch pay? One decode step of the starter at 32 rows, half
base and half LoRA: two 16-row calls (what ``tunesmith serve`` does today: one engine call per
adapter) vs one 32-row call with PEFT's per-row ``adapter_names``.

    python benchmarks/bench_mixed_adapters.py [--rows 32 --prompt 96 --steps 16 --threads 1]

The adapter has the training defaults (r16, alpha 32, all linear layers) and random nonzero
weights. Each configuration prefills ``--rows`` random prompts of ``--prompt`` tokens, then
times ``--steps`` decode steps (one token per row, KV cache), in process CPU seconds (steadier
than wall time on a shared machine). Two repeats.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=96)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    from tunesmith.models.loading import load_model

    model = get_peft_model(load_model("starter"), LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    model.eval()
    ids = torch.randint(100, 20000, (args.rows, args.prompt), generator=gen)

    def decode(rows: int, **kw) -> float:
        """CPU seconds per decode step of ``rows`` rows (after their prefill)."""
        with torch.inference_mode():
            out = model(input_ids=ids[:rows], use_cache=True, **kw)
            cache, last = out.past_key_values, out.logits[:, -1].argmax(-1)
            cpu = time.process_time()
            for _ in range(args.steps):
                out = model(input_ids=last[:, None], past_key_values=cache, use_cache=True, **kw)
                cache, last = out.past_key_values, out.logits[:, -1].argmax(-1)
            return (time.process_time() - cpu) / args.steps

    def base(rows: int) -> float:
        with model.disable_adapter():
            return decode(rows)

    def lora(rows: int) -> float:
        model.set_adapter("default")
        return decode(rows)

    half = args.rows // 2
    mixed_names = ["__base__"] * half + ["default"] * (args.rows - half)
    print(f"starter, {args.rows} rows, {args.prompt}-token prompts, {args.steps} decode steps, "
          f"{torch.get_num_threads()} thread(s); CPU ms per decode step")
    base(4)  # warm-up
    for _ in range(2):
        b, lo = base(args.rows), lora(args.rows)
        mixed = decode(args.rows, adapter_names=mixed_names)
        split = base(half) + lora(args.rows - half)
        print(f"base {b * 1e3:.0f}  LoRA {lo * 1e3:.0f}  mixed in one batch {mixed * 1e3:.0f}  "
              f"two calls of {half} {split * 1e3:.0f}  -> one batch / two calls: {split / mixed:.2f}x; "
              f"mixed as a share of base: {b / mixed:.1%} in one batch, {b / split:.1%} in two calls", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
