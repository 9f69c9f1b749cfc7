"""Fine-tuning methods: which parameters train. PEFT for LoRA / DoRA / prompt tuning / QLoRA;
plain parameter freezing for full fine-tuning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from tunesmith.config import LoraConfig as LoraSettings
from tunesmith.config import TrainConfig
from tunesmith.deps import BITSANDBYTES, require
from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PEFT_METHODS = ("lora", "dora", "qlora", "prompt_tuning")


def check_method_supported(cfg: TrainConfig) -> None:
    """Fail before loading anything when the method needs hardware we do not have."""
    if cfg.method == "qlora":
        if not torch.cuda.is_available():
            raise TunesmithError(
                "train.method: qlora needs a CUDA GPU (4-bit bitsandbytes kernels); "
                "use `lora` on this machine"
            )
        require(BITSANDBYTES)
    if cfg.method == "prompt_tuning" and cfg.packing:
        # PEFT prepends virtual tokens to a 2D attention mask; a packed 4D mask cannot carry them.
        raise TunesmithError(
            "train.packing must be false with train.method: prompt_tuning "
            "(soft prompts are prepended per sequence, so examples cannot share a row)"
        )


def apply_method(model: PreTrainedModel, cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> Any:
    """Return the model ready to train with ``cfg.method`` (a PeftModel for PEFT methods)."""
    if cfg.method == "full":
        trained = _top_layer_parameters(model, cfg.full.top_layers)
        for name, p in model.named_parameters():
            p.requires_grad_(trained is None or name in trained)
        return model
    import peft

    if cfg.method == "prompt_tuning":
        pt = cfg.prompt_tuning
        init = peft.PromptTuningInit.TEXT if pt.init_text else peft.PromptTuningInit.RANDOM
        pcfg = peft.PromptTuningConfig(
            task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=pt.num_virtual_tokens,
            prompt_tuning_init=init, prompt_tuning_init_text=pt.init_text,
            tokenizer_name_or_path=getattr(tokenizer, "name_or_path", None) if pt.init_text else None,
        )
        if pt.init_text:
            return _prompt_tuning_from_text(model, pcfg, tokenizer, pt.init_text)
        return peft.get_peft_model(model, pcfg)
    if cfg.method == "qlora":
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return peft.get_peft_model(model, lora_config(model, cfg.lora, dora=cfg.method == "dora"))


def lora_config(model: PreTrainedModel, lc: LoraSettings, *, dora: bool = False) -> Any:
    """PEFT's LoraConfig for ``train.lora`` on this model (``top_layers`` resolved to indices)."""
    import peft

    return peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM, r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
        target_modules=_linear_names(model) if _lora_top_layers(model, lc) and lc.target_modules == "all-linear"
        else lc.target_modules,
        use_rslora=lc.rslora, use_dora=dora,
        layers_to_transform=_top_layers(model, _lora_top_layers(model, lc), "train.lora.top_layers"),
    )


def _lora_top_layers(model: PreTrainedModel, lc: LoraSettings) -> int | None:
    """``lora.top_layers``, except that the *default* (10, chosen on the 30-layer starter) means
    every layer of a model that has no more layers than that; a value the config sets itself is
    kept, and one above the model's layer count fails in ``_top_layers``."""
    n = lc.top_layers
    default = n is not None and "top_layers" not in lc.model_fields_set
    return None if default and n >= model.config.get_text_config().num_hidden_layers else n


def _linear_names(model: PreTrainedModel) -> list[str]:
    """What PEFT's "all-linear" means, spelled out (PEFT needs names to select layers): every
    linear (or GPT-2 Conv1D) module's name, except the output head."""
    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if type(m).__name__ in ("Linear", "Conv1D") and m is not head})


def _top_layers(model: PreTrainedModel, n: int | None, key: str) -> list[int] | None:
    """Indices of the last ``n`` transformer layers (None = all). Nothing below them trains,
    so autograd stops there: the lower layers run forward only, which shortens each step."""
    if n is None:
        return None
    total = model.config.get_text_config().num_hidden_layers
    if n > total:
        raise TunesmithError(f"{key}: {n} is more than the model's {total} layers")
    return list(range(total - n, total))


def _top_layer_parameters(model: PreTrainedModel, n: int | None) -> set[str] | None:
    """Names of the parameters a full fine-tune of the last ``n`` layers trains (None = all):
    those layers' weights and what follows the layer stack (the final norm). Embeddings, the
    output head and the layers below stay frozen."""
    indices = _top_layers(model, n, "train.full.top_layers")
    if indices is None:
        return None
    total = model.config.get_text_config().num_hidden_layers
    stack = next((name for name, m in model.named_modules()
                  if isinstance(m, torch.nn.ModuleList) and len(m) == total), None)
    if stack is None:
        raise TunesmithError(f"train.full.top_layers: cannot find the {total} transformer layers of "
                             f"{type(model).__name__}; set it to null to train every weight")
    frozen_modules = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    head = model.get_output_embeddings()
    frozen = {id(p) for m in [*frozen_modules, head] if m is not None for p in m.parameters()}
    keep = {f"{stack}.{i}." for i in indices}
    return {name for name, p in model.named_parameters() if id(p) not in frozen and (
        name.startswith(tuple(keep)) or not name.startswith(f"{stack}."))}


def _prompt_tuning_from_text(model: Any, pcfg: Any, tokenizer: Any, text: str) -> Any:
    """PEFT's TEXT init reloads the tokenizer by name (a hub call); use the one we have."""
    import peft

    pcfg.prompt_tuning_init = peft.PromptTuningInit.RANDOM
    wrapped = peft.get_peft_model(model, pcfg)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = pcfg.num_virtual_tokens
    ids = (ids * (n // max(1, len(ids)) + 1))[:n]
    with torch.no_grad():
        emb = model.get_input_embeddings()(torch.tensor(ids, device=model.device))
        wrapped.prompt_encoder["default"].embedding.weight.copy_(emb.to(torch.float32))
    return wrapped


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainable_state(model: Any, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights a checkpoint must hold: the adapter for PEFT methods; for full fine-tuning
    everything, or only the trained layers with ``full.top_layers`` (the rest is the base)."""
    if cfg.method in PEFT_METHODS:
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    if cfg.full.top_layers:
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in trained}
    # Tied weights (input embeddings = output head) are one tensor under two names;
    # safetensors refuses to store both, and one copy is all a reload needs.
    aliases = _tied_aliases(model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in aliases}


def _tied_aliases(model: Any) -> set[str]:
    """State-dict names that share storage with an earlier name (tied weights)."""
    seen: set[int] = set()
    aliases = set()
    for k, v in model.state_dict().items():
        if v.data_ptr() in seen and v.numel():
            aliases.add(k)
        seen.add(v.data_ptr())
    return aliases


def load_trainable_state(model: Any, cfg: TrainConfig, state: dict[str, torch.Tensor]) -> None:
    if cfg.method in PEFT_METHODS:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, state)
        # PEFT loads prompt embeddings into the prompt encoder itself, then reports them
        # as unexpected for the base model: not a mismatch.
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if k != "prompt_embeddings"]
        if unexpected:
            raise TunesmithError(f"checkpoint does not match the model: unexpected keys {unexpected[:3]}")
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    needed = {n for n, p in model.named_parameters() if p.requires_grad} if cfg.full.top_layers else None
    missing = [k for k in missing if k not in _tied_aliases(model) and (needed is None or k in needed)]
    if missing or unexpected:
        raise TunesmithError(
            f"checkpoint does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


LORA_METHODS = ("lora", "dora", "qlora")  # adapters a retrain may continue from


def load_adapter_init(model: Any, version_dir: Any, cfg: TrainConfig, *, base_fingerprint: str | None = None) -> int:
    """Copy a model version's LoRA/DoRA adapter weights into ``model`` (a fresh PeftModel of the
    same shape) so training continues from them; returns the number of tensors loaded.

    Why not ``PeftModel.from_pretrained(..., is_trainable=True)``: the run's own adapter config
    (``train.lora``) decides the shape, dropout and the top layers; the earlier weights only
    start it. A mismatch (another method, rank, target modules or base model) is refused with
    what differs, never loaded partially.
    """
    import json
    from pathlib import Path

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(version_dir)
    record_path = folder / "model_version.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    method = record.get("method")
    if cfg.method not in LORA_METHODS:
        raise TunesmithError(f"starting from an earlier adapter needs train.method lora or dora, not '{cfg.method}' "
                             "(use retrain.start: base)")
    if method and method != cfg.method:
        raise TunesmithError(f"model version {folder.name[:12]} was trained with method '{method}', this run uses "
                             f"'{cfg.method}': its weights cannot start this run (use retrain.start: base, or the "
                             f"same train.method)")
    if base_fingerprint and record.get("base_fingerprint") and record["base_fingerprint"] != base_fingerprint:
        raise TunesmithError(f"model version {folder.name[:12]} was trained on another base model "
                             f"({record.get('base_model')}); its adapter cannot start a run on this one")
    weights = folder / "adapter" / "adapter_model.safetensors"
    if not weights.exists():
        raise TunesmithError(f"model version {folder.name[:12]} has no adapter weights ({weights} is missing)")
    state = load_file(str(weights))
    try:
        result = set_peft_model_state_dict(model, state)
    except RuntimeError as exc:  # size mismatch: another rank
        first = str(exc).splitlines()[1:2] or [str(exc)[:200]]
        raise TunesmithError(f"the adapter of {folder.name[:12]} does not fit train.lora ({first[0].strip()[:200]}); "
                             "use the champion's rank and target modules, or retrain.start: base") from None
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if unexpected or missing:
        which = (unexpected or missing)[0]
        raise TunesmithError(f"the adapter of {folder.name[:12]} does not match train.lora's modules "
                             f"({len(missing)} adapter tensors missing, {len(unexpected)} unexpected, e.g. {which}); "
                             "use the champion's target modules and top_layers, or retrain.start: base")
    return len(state)


def load_full_init(model: Any, version_dir: Any, *, base_fingerprint: str | None = None) -> int:
    """Copy a full fine-tune's weights (``<version>/model/*.safetensors``) into ``model`` so
    training continues from them (``retrain.start: champion`` for ``train.method: full``);
    returns the number of tensors loaded. Which layers train is this run's ``train.full``.

    Every tensor must fit: a version of another base or architecture is refused with what
    differs, never loaded partially (only tied duplicates, saved once, may be absent).
    """
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(version_dir)
    record_path = folder / "model_version.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("weights") != "model":
        raise TunesmithError(f"model version {folder.name[:12]} holds no full weights (method "
                             f"'{record.get('method')}'); it cannot start a full fine-tune (use retrain.start: base)")
    if base_fingerprint and record.get("base_fingerprint") and record["base_fingerprint"] != base_fingerprint:
        raise TunesmithError(f"model version {folder.name[:12]} was trained on another base model "
                             f"({record.get('base_model')}); its weights cannot start a run on this one")
    files = sorted((folder / "model").glob("*.safetensors"))
    if not files:
        raise TunesmithError(f"model version {folder.name[:12]} has no weights ({folder / 'model'} holds no .safetensors)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in state and k not in _tied_aliases(model)]
    if wrong or missing:
        raise TunesmithError(f"the weights of {folder.name[:12]} do not fit this model ({len(wrong)} unexpected or "
                             f"reshaped, {len(missing)} missing, e.g. {(wrong or missing)[0]}); use retrain.start: base")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor.to(own[name].dtype))
    return len(state)
