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

from collections.abc import Callable
from typing import Any

import torch


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
