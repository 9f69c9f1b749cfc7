"""Training checkpoints that resume exactly, stored without pickle.

A checkpoint folder holds:
    trainable.safetensors   the trained weights (adapter, or the whole model for full FT)
    optimizer.safetensors   every optimizer state tensor, keyed ``<param index>.<name>``
    rng.safetensors         torch's CPU (and CUDA) generator states
    state.json              step, data position, optimizer param groups + scalar state,
                            scheduler state, best metric, history

Everything that decides what happens next — weights, optimizer moments, LR schedule, RNG
(dropout), and the position in the epoch's fixed data order — is restored, so a run killed
at any point and resumed ends with the same weights as one that never stopped.
Folders are written to a temp name and renamed, so a kill mid-save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunesmith.errors import TunesmithError

STEP_PREFIX = "step-"


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path, *, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
    scheduler: Any, state: dict[str, Any],
) -> Path:
    """Write a checkpoint atomically to ``folder`` (replacing nothing that exists)."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, str(tmp / "trainable.safetensors"))
    opt_tensors, opt_meta = _optimizer_to_flat(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng |= {f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(rng, str(tmp / "rng.safetensors"))
    full_state = {**state, "optimizer": opt_meta, "scheduler": scheduler.state_dict()}
    (tmp / "state.json").write_text(json.dumps(full_state, indent=1, default=float))
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(tmp, folder)
    return folder


def load_checkpoint(folder: Path, *, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore optimizer, scheduler and RNG in place; return (weights, trainer state)."""
    try:
        state = json.loads((folder / "state.json").read_text())
        weights = load_file(str(folder / "trainable.safetensors"))
        opt_tensors = load_file(str(folder / "optimizer.safetensors"))
        rng = load_file(str(folder / "rng.safetensors"))
    except (OSError, ValueError) as exc:
        raise TunesmithError(f"checkpoint {folder} is unreadable ({exc}); delete it to resume from an earlier one") from None
    optimizer.load_state_dict(_optimizer_from_flat(opt_tensors, state.pop("optimizer")))
    scheduler.load_state_dict(state.pop("scheduler"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    return weights, state


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest step first."""
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(STEP_PREFIX) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.removeprefix(STEP_PREFIX)))


def prune_checkpoints(root: Path, keep_best: int, scores: dict[str, float]) -> None:
    """Keep the ``keep_best`` checkpoints with the lowest validation loss, plus the latest."""
    ckpts = list_checkpoints(root)
    if len(ckpts) <= keep_best:
        return
    latest = ckpts[-1]
    ranked = sorted(ckpts, key=lambda p: scores.get(p.name, float("inf")))
    keep = set(ranked[:keep_best]) | {latest}
    for p in ckpts:
        if p not in keep:
            shutil.rmtree(p, ignore_errors=True)
