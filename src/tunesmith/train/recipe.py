"""``train``: dataset snapshot in, model version out. Reads top to bottom like the algorithm:

    1. check the config against the hardware (before anything loads)
    2. load the snapshot's splits, the tokenizer; render + mask + pre-flight every example
    3. load the base model, apply the method (LoRA / DoRA / full / prompt tuning / QLoRA)
    4. fit (validation, early stopping, checkpoints, exact resume) with tracking
    5. export the best weights as a model version (PEFT adapter or full safetensors) + lineage
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith import __version__
from tunesmith.config import Config, SourceConfig
from tunesmith.data.example import Example
from tunesmith.data.pipeline import load_split
from tunesmith.deps import preflight as check_dependencies
from tunesmith.errors import TunesmithError
from tunesmith.train.masks import enforce_preflight, preflight, tokenize_examples
from tunesmith.train.methods import (
    PEFT_METHODS,
    apply_method,
    check_method_supported,
    trainable_parameters,
)
from tunesmith.train.trainer import LogFn, Trainer, make_accelerator, precision_for
from tunesmith.workspace import Workspace


@dataclass
class TrainResult:
    model_id: str | None
    path: Path | None
    run_dir: Path
    metrics: dict[str, Any]
    interrupted: bool = False
    preflight: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


def resolve_snapshot(ws: Workspace, snapshot: str | None) -> tuple[str, Path]:
    if snapshot:
        art = ws.get("snapshot", snapshot)
        return art.id, art.path
    latest = ws.latest("snapshot")
    if latest is None:
        raise TunesmithError(f"no dataset snapshot in {ws.root}; run `tunesmith prepare` first")
    return latest.id, latest.path


def run_key(cfg: Config, snapshot_id: str, init: dict[str, Any] | None = None) -> str:
    """Same snapshot + model + train config + seed (+ the adapter it starts from, if any) -> same
    run folder (what --resume finds)."""
    data = {"snapshot": snapshot_id, "model": cfg.model.model_dump(mode="json"),
            "train": cfg.train.model_dump(mode="json", exclude={"tracking"}), "seed": cfg.seed}
    if init:
        data["init"] = init  # only when set: the keys of every earlier run stay what they were
    blob = json.dumps(data, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _existing_version(ws: Workspace, key: str) -> TrainResult | None:
    """The model version this exact (snapshot, model, train config, seed) already produced."""
    for art in reversed(ws.list("model")):
        if art.meta.get("run_key") == key:
            record = json.loads((art.path / "model_version.json").read_text())
            return TrainResult(art.id, art.path, Path(record["run_dir"]), record["metrics"], reused=True)
    return None


def model_reference(cfg: Config) -> str:
    """``model.base`` with a relative path resolved against the config's folder."""
    local = cfg.resolve(cfg.model.base)
    return str(local) if cfg.model.base != "starter" and local.exists() else cfg.model.base


def _device_and_dtype(cfg: Config, device: torch.device) -> tuple[str, str]:
    # ``device`` is this process's accelerator device (cuda:<local rank> under accelerate
    # launch): loading every rank onto plain "cuda" would stack N copies on GPU 0 first.
    if cfg.model.dtype != "auto":
        return str(device), cfg.model.dtype
    if cfg.train.method == "full" or device.type == "cpu":
        return str(device), "float32"  # master weights in fp32; autocast does the bf16 math
    return str(device), "bfloat16"


def _discard(event: dict[str, Any]) -> None:
    """The log of ranks other than 0: one progress bar and one set of messages per run."""


def _load_rehearsal(cfg: Config, ws: Workspace) -> tuple[list[Example], str | None]:
    path = cfg.train.rehearsal.path
    if not path or cfg.train.rehearsal.ratio == 0:
        return [], None
    from tunesmith.data.ingest import Quarantined, expand_source, read_source

    if not any(c in path for c in "/.*") and ws.list("snapshot"):
        try:
            art = ws.get("snapshot", path)
            return load_split(art.path, "train"), f"snapshot:{art.id}"
        except TunesmithError:
            pass
    src = SourceConfig(path=path)
    examples = [
        rec for p in expand_source(src, cfg.base_dir)
        for rec in read_source(src, p, base_dir=cfg.base_dir, max_line_bytes=cfg.data.max_line_bytes)
        if not isinstance(rec, Quarantined)
    ]
    if not examples:
        raise TunesmithError(f"train.rehearsal.path: no readable examples in {path}")
    return examples, f"file:{path}"


def _with_demonstrations(cfg: Config, tokenizer: Any, train_ex: list[Example], val_ex: list[Example],
                         log: LogFn) -> tuple[list[Example], list[Example]]:
    """Each example preceded by its k most similar solved train examples (itself excluded), the
    way the finetuned_fewshot rung will ask; only the example's own answer is trained."""
    from dataclasses import replace

    from tunesmith.evaluate.fewshot import FewShotSelector
    from tunesmith.evaluate.strategies import query_text, with_shots

    t0 = time.perf_counter()
    selector, k, budget = FewShotSelector(train_ex), cfg.train.fewshot_k, cfg.eval.few_shot.token_budget

    def count_tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    def shown(examples: list[Example]) -> list[Example]:
        return [replace(ex, messages=with_shots(ex.messages, selector.select(
            query_text(ex), k, token_budget=budget, count_tokens=count_tokens, exclude_ids={ex.id})))
            for ex in examples]

    out = shown(train_ex), shown(val_ex)
    log({"event": "demonstrations", "k": k, "examples": len(train_ex) + len(val_ex),
         "seconds": round(time.perf_counter() - t0, 1)})
    return out


def _tokenize(cfg: Config, tokenizer: Any, examples: list[Example], what: str, log: LogFn) -> tuple[list, dict]:
    t = cfg.train
    # with demonstrations in the prompt, their answers are context: only the last turn trains
    mode = "last_turn" if t.fewshot_k and t.loss_on == "assistant" and what != "rehearsal" else t.loss_on
    tok = tokenize_examples(tokenizer, examples, mode=mode, system=cfg.model.system_prompt,
                            fallback_template=cfg.model.chat_template)
    report = preflight(tok, t.max_length)
    log({"event": "preflight", "split": what, **report.to_dict()})
    kept = enforce_preflight(tok, report, on_problem=t.on_bad_examples)
    return kept, report.to_dict()


def train(
    cfg: Config, *, snapshot: str | None = None, resume: bool = False, log: LogFn | None = None,
    accelerator: Any = None, init_adapter: Path | None = None, lineage_extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune ``cfg.model.base`` on a snapshot; returns the registered model version.

    ``init_adapter``: a model version whose LoRA/DoRA adapter weights (or, for ``method: full``,
    whole weights) start training instead of a fresh initialisation (``tunesmith retrain`` with
    ``retrain.start: champion``); it must have the same method (and rank and target modules). ``lineage_extra``: more lineage keys for the
    version record (the parent version, the retrain it came from).

    Raises:
        TunesmithError: no snapshot, empty train split, unsupported method here, template or
            pre-flight problems, or a max_length beyond the model's context.
    """
    from tunesmith.models.loading import (
        check_context_length,
        load_model,
        load_tokenizer,
        model_fingerprint,
        resolve_model,
    )

    log = log or (lambda e: None)
    quiet_libraries()
    # 1. fail before any loading
    check_dependencies(cfg, ["train"])
    check_method_supported(cfg.train)
    ws = Workspace(cfg.workspace_dir)
    snapshot_id, snap_dir = resolve_snapshot(ws, snapshot)
    train_ex, val_ex = load_split(snap_dir, "train"), load_split(snap_dir, "validation")
    if not train_ex:
        raise TunesmithError(f"snapshot {snapshot_id} has an empty train split; check data.split ratios and the drop counts")
    init = {"adapter_of": init_adapter.name, **(lineage_extra or {})} if init_adapter else dict(lineage_extra or {})
    key = run_key(cfg, snapshot_id, init or None)
    # A finished run is reused, with or without resume: `tunesmith run`/`demo` always pass
    # resume=True, and resuming a run at its last step registered a second, identical version
    # (and made every later stage, eval included, run again).
    if (done := _existing_version(ws, key)) is not None:
        return done
    ref = resolve_model(model_reference(cfg))
    # Under `accelerate launch` every rank runs this function; rank 0 alone reports, and
    # alone writes tracking, checkpoints and the export (see Trainer and _tracker).
    acc = accelerator or make_accelerator(cfg.train)
    log = log if acc.is_main_process else _discard
    # 2. tokenizer first: template problems surface in seconds, not after the model loads
    tokenizer = load_tokenizer(ref, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.train.fewshot_k:
        train_ex, val_ex = _with_demonstrations(cfg, tokenizer, train_ex, val_ex, log)
    train_tok, report = _tokenize(cfg, tokenizer, train_ex, "train", log)
    val_tok, _ = _tokenize(cfg, tokenizer, val_ex, "validation", log) if val_ex else ([], {})
    rehearsal_ex, rehearsal_ref = _load_rehearsal(cfg, ws)
    # 3. model + method
    device, dtype = _device_and_dtype(cfg, acc.device)
    from transformers import set_seed

    set_seed(cfg.seed)  # adapter init and dropout: same seed, same run
    log({"event": "loading_model", "model": ref.ref, "device": device, "dtype": dtype})
    t0 = time.perf_counter()
    base = load_model(ref, dtype=dtype, device=device, trust_remote_code=cfg.model.trust_remote_code,
                      allow_pickle=cfg.model.allow_pickle)
    check_context_length(base, cfg.train.max_length)
    if (n_self := cfg.train.rehearsal.self_distill) and cfg.train.rehearsal.ratio > 0:
        from tunesmith.train.rehearsal import self_rehearsal

        distilled = self_rehearsal(base, tokenizer, n_self, fingerprint=model_fingerprint(ref),
                                   cache_dir=ws.root / "cache", system=cfg.model.system_prompt,
                                   fallback_template=cfg.model.chat_template,
                                   bf16=precision_for(cfg.train) == "bf16", log=log)
        rehearsal_ex = rehearsal_ex + distilled
        rehearsal_ref = "+".join(filter(None, [rehearsal_ref, f"self:{len(distilled)}"]))
    if (n_text := cfg.train.rehearsal.self_distill_text) and cfg.train.rehearsal.ratio > 0:
        from tunesmith.train.rehearsal import self_rehearsal_text

        prose = self_rehearsal_text(base, tokenizer, n_text, fingerprint=model_fingerprint(ref),
                                    cache_dir=ws.root / "cache", seed=cfg.seed,
                                    bf16=precision_for(cfg.train) == "bf16", log=log)
        rehearsal_ex = rehearsal_ex + prose
        rehearsal_ref = "+".join(filter(None, [rehearsal_ref, f"self-text:{len(prose)}"]))
    rehearsal_tok = _tokenize(cfg, tokenizer, rehearsal_ex, "rehearsal", log)[0] if rehearsal_ex else []
    if cfg.train.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.enable_input_require_grads()
    model = apply_method(base, cfg.train, tokenizer)
    if init_adapter is not None:
        from tunesmith.train.methods import load_adapter_init, load_full_init

        if cfg.train.method == "full":  # a full fine-tune continues from the version's whole weights
            loaded = load_full_init(model, init_adapter, base_fingerprint=model_fingerprint(ref))
        else:
            loaded = load_adapter_init(model, init_adapter, cfg.train, base_fingerprint=model_fingerprint(ref))
        log({"event": "init_adapter", "from": init_adapter.name, "tensors": loaded})
    if cfg.train.compile:
        model = torch.compile(model)
    n_train, n_total = trainable_parameters(model)
    log({"event": "model_ready", "seconds": round(time.perf_counter() - t0, 1),
         "trainable_params": n_train, "total_params": n_total, "precision": precision_for(cfg.train)})
    # 4. fit
    run_dir = cfg.workspace_dir / "runs" / f"train-{key}"
    if not resume and (run_dir / "checkpoints").exists():
        raise TunesmithError(
            f"{run_dir} already has checkpoints from this exact config; pass --resume to continue it "
            f"or delete the folder to start over"
        )
    trainer = Trainer(model, cfg.train, train=train_tok, validation=val_tok, rehearsal=rehearsal_tok,
                      pad_id=tokenizer.pad_token_id, seed=cfg.seed, run_dir=run_dir,
                      accelerator=acc, log=log)
    tracker = _tracker(cfg, run_dir, snapshot_id, trainer)
    trainer.log = _tee(log, tracker.log)
    try:
        fit = trainer.fit(resume=resume)
    except BaseException:
        tracker.close("FAILED")
        raise
    metrics = _summary_metrics(trainer, fit, report)
    if fit.interrupted:
        tracker.close("KILLED")
        return TrainResult(None, None, run_dir, metrics, interrupted=True, preflight=report)
    # 5. export the best weights as a model version
    trainer.load_best()
    lineage = {"run_key": key, "base_model": cfg.model.base, "base_location": ref.location, "base_fingerprint": model_fingerprint(ref), "snapshot": snapshot_id,
               "rehearsal": rehearsal_ref, "config_hash": cfg.hash(), "method": cfg.train.method,
               "tunesmith": __version__, "seed": cfg.seed, **(lineage_extra or {})}
    art = None
    if trainer.acc.is_main_process:
        art = _export(ws, cfg, trainer, tokenizer, lineage, metrics, run_dir)
        tracker.log_artifacts(art.path, "model")
        if cfg.train.tracking.mlflow:  # the version appears in MLflow's model registry at once
            from tunesmith.registry import ModelRegistry

            mirrored = ModelRegistry.from_config(cfg).sync_mlflow()
            if mirrored is not None and mirrored.error:
                log({"event": "warning", "message": f"MLflow model registry: {mirrored.error}"})
    tracker.close()
    return TrainResult(art.id if art else None, art.path if art else None, run_dir, metrics, preflight=report)


def quiet_libraries() -> None:
    """Our progress bar is the one the user reads; silence per-shard bars and deprecation noise."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _tee(*fns: LogFn) -> LogFn:
    def log(event: dict[str, Any]) -> None:
        for fn in fns:
            fn(event)

    return log


def _tracker(cfg: Config, run_dir: Path, snapshot_id: str, trainer: Trainer) -> Any:
    from tunesmith.train.tracking import Tracker

    params = {"snapshot": snapshot_id, "seed": cfg.seed, "model": cfg.model.model_dump(mode="json"),
              "train": cfg.train.model_dump(mode="json"), "total_steps": trainer.total_steps}
    return Tracker(cfg.train.tracking, run_dir=run_dir, workspace=cfg.workspace_dir, experiment=cfg.project,
                   run_name=run_dir.name, params=params, enabled=trainer.acc.is_main_process)


def _summary_metrics(trainer: Trainer, fit: Any, report: dict) -> dict[str, Any]:
    st = fit.state
    evals = [h for h in st.history if h.get("event") == "eval"]
    steps = [h for h in st.history if h.get("event") == "step"]
    return {
        "steps": st.step, "epochs_started": st.epoch + 1, "best_step": st.best_step,
        "best_val_loss": st.best_val_loss if evals else None,
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "final_val_token_accuracy": evals[-1]["val_token_accuracy"] if evals else None,
        "final_train_loss": steps[-1]["loss"] if steps else None,
        "stopped_early": st.stopped_early, "tokens_seen": st.tokens_seen,
        "tokens_per_second": round(fit.tokens_per_second, 1), "seconds": round(fit.seconds, 1),
        "train_examples": report.get("examples"),
    }


def _export(ws: Workspace, cfg: Config, trainer: Trainer, tokenizer: Any, lineage: dict, metrics: dict,
            run_dir: Path) -> Any:
    from tunesmith.train.tracking import plot_loss_curve, read_metrics

    model = trainer.acc.unwrap_model(trainer.model)
    with ws.staging() as staging:
        weights_dir = staging / ("adapter" if cfg.train.method in PEFT_METHODS else "model")
        model.save_pretrained(str(weights_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(staging / "tokenizer"))
        digest = hashlib.sha256(json.dumps(lineage, sort_keys=True).encode())
        for f in sorted(weights_dir.glob("*.safetensors")):
            digest.update(f.read_bytes())
        model_id = digest.hexdigest()[:20]
        record = {"kind": "tunesmith.model_version", "id": model_id, **lineage, "metrics": metrics,
                  "config": {"model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")},
                  "weights": weights_dir.name, "run_dir": str(run_dir)}
        (staging / "model_version.json").write_text(json.dumps(record, indent=1, default=str))
        plot_loss_curve(read_metrics(run_dir / "metrics.jsonl"), staging / "loss.png")
        plot_loss_curve(read_metrics(run_dir / "metrics.jsonl"), run_dir / "loss.png")
        parents = [("snapshot", lineage["snapshot"], "trained_on")]
        if lineage.get("parent"):
            parents.append(("model", lineage["parent"], "continues" if lineage.get("start") == "champion"
                            else "retrained_from"))
        return ws.publish(staging, "model", model_id, meta={k: record[k] for k in (
            "run_key", "base_model", "base_fingerprint", "snapshot", "config_hash", "method", "tunesmith", "metrics")},
            parents=parents)
