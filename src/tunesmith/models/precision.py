"""Linear weights stored in bfloat16 for bf16 autocast: the same results, without a cast a step.

Under ``torch.autocast(dtype=torch.bfloat16)`` every ``linear`` casts its float32 weight to
bf16 on each forward. Autocast caches that cast only for leaf tensors that require grad, so a
frozen weight (a LoRA base layer in training, every weight of the generation engine) is cast
again on every step: on the starter, 729 casts of ~135M elements per decode step, 45% of its
time (profiled 2026-12-04). A weight stored in bf16 is the very tensor the cast would have
made, so the matmul sees the same operands and the results are bit for bit the same.

Left in float32: weights that require grad (what an optimizer updates), embeddings and norms
(not linears: autocast does not cast them), DoRA layers (their magnitude uses the float32
weight's norm) and weights shared between modules, except the LM head tied to the input
embeddings, which :func:`engine_bf16_weights` unties into a bf16 copy of its own.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def _linear_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear (addmm: autocast casts it too)

    return (torch.nn.Linear, Conv1D)


def _owners(model: torch.nn.Module) -> dict[int, int]:
    """How many modules hold each parameter (2+ = tied)."""
    owners: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners[id(param)] = owners.get(id(param), 0) + 1
    return owners


def _to_bf16(layer: torch.nn.Module) -> None:
    layer.weight.data = layer.weight.data.to(torch.bfloat16)
    if getattr(layer, "bias", None) is not None and not layer.bias.requires_grad:
        layer.bias.data = layer.bias.data.to(torch.bfloat16)


def store_bf16(model: torch.nn.Module, pick: Callable[[torch.nn.Module], torch.nn.Module | None]) -> int:
    """Store in bf16 the weight of each linear that ``pick(module)`` returns (None: skip) when
    it is frozen, float32 and not shared; returns how many."""
    linear, owners, count = _linear_types(), _owners(model), 0
    for module in list(model.modules()):
        layer = pick(module)
        w = getattr(layer, "weight", None)
        if (not isinstance(layer, linear) or w is None or w.requires_grad or w.dtype != torch.float32
                or owners[id(w)] > 1):
            continue
        _to_bf16(layer)
        count += 1
    return count


def _is_dora(module: Any) -> bool:
    return any(getattr(module, "use_dora", {}).values())


def engine_bf16_weights(model: Any) -> int:
    """For inference under bf16 autocast: every frozen linear of ``model`` in bf16 (LoRA base
    layers included, DoRA layers excepted), and a tied LM head untied into a bf16 copy (the
    input embeddings stay float32); returns how many weights changed."""
    from peft.tuners.lora import LoraLayer

    lora_parts = {id(m) for layer in model.modules() if isinstance(layer, LoraLayer)
                  for m in layer.modules() if m is not layer.get_base_layer()}
    dora_bases = {id(layer.get_base_layer()) for layer in model.modules()
                  if isinstance(layer, LoraLayer) and _is_dora(layer)}
    count = store_bf16(model, lambda m: None if id(m) in lora_parts or id(m) in dora_bases else m)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if (isinstance(head, _linear_types()) and embed is not None and head.weight is embed.weight
            and head.weight.dtype == torch.float32 and not head.weight.requires_grad):
        head.weight = torch.nn.Parameter(head.weight.detach().to(torch.bfloat16), requires_grad=False)
        count += 1
    return count


# ---------------------------------------------------------------------------- which precision pays
BF16_MIN_SPEEDUP = 1.15  # bf16 changes some answers: worth it only when clearly faster
_PROBE_SHAPE = (512, 576, 1536)  # rows x hidden x MLP width: the starter's MLP matmul, one packed batch


def _cpuinfo(*keys: str) -> str:
    """The value of the first ``/proc/cpuinfo`` line starting with one of ``keys`` ("" if none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith(keys)), "")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    return set(_cpuinfo("flags", "Features").split())


def matmul_gflops(dtype: torch.dtype, *, seconds: float = 0.1, shape: tuple[int, int, int] = _PROBE_SHAPE) -> float:
    """GFLOP/s of ``shape`` matmuls in ``dtype`` on the CPU: the best of three timed loops."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(dtype)
    b = torch.randn(k, n, generator=gen).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, packing buffers
    best = float("inf")
    for _ in range(3):
        count, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds or count < 2:
            torch.matmul(a, b)
            count += 1
        best = min(best, elapsed / count)
    return 2 * m * k * n / best / 1e9


def cache_file() -> Path:
    """Where :func:`cpu_bf16_pays` keeps its per-machine measurement."""
    from tunesmith.models.loading import cache_root

    return cache_root() / "precision.json"


@functools.lru_cache(maxsize=1)
def cpu_bf16_pays() -> bool:
    """Whether bf16 autocast is worth it on this CPU: it must have native bf16 instructions
    (AVX512-BF16 or AMX) **and** run bf16 matmuls at least ``BF16_MIN_SPEEDUP`` times as fast
    as float32. The flags alone mislead: measured here, a CPU with AMX ran the starter's matmuls
    at bf16 388 / fp32 174 GFLOP/s (bf16 trained 2x faster), one with AVX512-BF16 but no AMX at
    bf16 169 / fp32 335 (fp32 trained 2x faster: 959 vs 473 tokens/s on the demo).

    Measured once per machine (~0.7 s) and kept in the cache folder (``precision.json``, keyed
    by CPU model, flags, torch version and thread count), so every run on a machine chooses the
    same precision.
    """
    flags = cpu_flags()
    if not flags & {"avx512_bf16", "amx_bf16"}:
        return False
    key = "|".join([_cpuinfo("model name") or platform.machine(), ",".join(sorted(f for f in flags if "avx" in f or "amx" in f)),
                    torch.__version__, str(torch.get_num_threads())])
    path = cache_file()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
        known[key] = {"fp32_gflops": round(fp32, 1), "bf16_gflops": round(bf16, 1),
                      "bf16": bf16 >= BF16_MIN_SPEEDUP * fp32}
        with contextlib.suppress(OSError):  # a read-only cache: measured again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1))
            tmp.replace(path)
    return bool(known[key].get("bf16"))


def use_bf16(precision: str) -> bool:
    """A generation precision setting (``fp32``, ``bf16`` or ``auto``) resolved on this machine:
    ``auto`` is bf16 on a CUDA GPU that supports it, and on a CPU where :func:`cpu_bf16_pays`.
    An explicit ``bf16`` is kept, with a warning (once) on a CPU where it does not pay: a
    project config written on another machine (or by an older template) would otherwise answer
    at half speed without a word (docs/operate.md, the seventh run)."""
    if precision != "auto":
        if precision == "bf16" and not torch.cuda.is_available():
            _warn_if_bf16_is_slow()
        return precision == "bf16"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_bf16_pays()


@functools.cache
def _warn_if_bf16_is_slow() -> None:
    if not cpu_bf16_pays():
        log.warning("generation precision is bf16, but this CPU runs bf16 matmuls slower than float32 "
                    "(measured once per machine: %s); `precision: auto` would answer in float32 here",
                    cache_file())
