"""The training loop: deterministic data plan, token-normalised accumulation, validation,
early stopping, checkpoints that resume exactly, Ctrl-C that saves.

Data plan. Each epoch's micro-batches are a pure function of (seed, epoch): pack (or length-
group) the epoch's examples, shuffle with ``Generator(seed, epoch)``, cut into micro-batches.
An optimizer step consumes ``grad_accum × world_size`` consecutive micro-batches; rank r takes
every world_size-th one (an epoch's last step may hold fewer micro-batches than ranks: an idle
rank runs one with loss weight 0, so the gradient all-reduce still completes). Resuming needs
only (epoch, micro-batch index) plus every rank's RNG state.

Loss. For a step over micro-batches m with trained-token counts n_m, the loss is
Σ_m Σ_tokens CE / Σ_m n_m: exactly the loss of one big batch, however it is split (the
"gradient accumulation bug" of averaging per-micro-batch means is avoided by construction).
Under DDP the gradients are averaged over ranks, so each rank scales by world_size.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.config import TrainConfig
from tunesmith.train.checkpoint import (
    STEP_PREFIX,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from tunesmith.train.masks import IGNORE_INDEX, TokenizedExample
from tunesmith.train.methods import load_trainable_state, trainable_state
from tunesmith.train.packing import (
    LengthGroupedBatchSampler,
    collate_packed,
    collate_padded,
    mask_format_for,
    pack_examples,
    segment_bounds,
    use_packed_attention,
)

Batch = dict[str, torch.Tensor]
LogFn = Callable[[dict[str, Any]], None]
KILL_ENV = "TUNESMITH_TEST_KILL_AT_STEP"  # tests: SIGKILL ourselves after this step


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    micro: int = 0  # index of the next micro-batch within the epoch
    tokens_seen: int = 0
    best_val_loss: float = float("inf")
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    ckpt_scores: dict[str, float] = field(default_factory=dict)
    total_steps: int = 0  # the step count in force (0: as planned); train.time_budget may cut it
    seconds: float = 0.0  # wall time of the training loop so far, across resumes


@dataclass
class FitResult:
    state: TrainerState
    interrupted: bool
    seconds: float
    tokens_per_second: float


def param_groups(model: Any, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Trained parameters as optimizer groups. With ``lora.plus_ratio`` > 1 (LoRA+, Hayou et
    al. 2024) the B matrices learn that many times faster than the A matrices; the scheduler
    scales every group's rate alike, so the ratio holds through warmup and decay."""
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ratio = cfg.lora.plus_ratio if cfg.method in ("lora", "dora", "qlora") else 1.0
    if ratio == 1.0:
        return [{"params": [p for _, p in trained]}]
    fast = [p for n, p in trained if ".lora_B." in n]
    rest = [p for n, p in trained if ".lora_B." not in n]
    return [{"params": rest}, {"params": fast, "lr": cfg.lr * ratio}]


CALIBRATION_STEPS = 6  # steps timed (the first one, warming caches up, is left out) before the budget acts


@dataclass
class _Budget:
    """Measures step and validation times and says how many steps fit in ``seconds``."""

    seconds: float
    eval_every: int
    step_times: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)

    def ready(self, used: float, evaluated: bool) -> bool:
        """Re-plan once the first steps are timed, after each validation, and at once when the
        budget is spent (steps far slower than the budget allows must not wait for calibration)."""
        timed = len(self.step_times)
        if timed >= 2 and used >= self.seconds:
            return True
        return timed >= CALIBRATION_STEPS and (timed == CALIBRATION_STEPS or evaluated)

    def step_seconds(self) -> float:
        return float(np.median(self.step_times[1:] or self.step_times))

    def eval_cost(self, estimate: float) -> float:
        return float(np.mean(self.eval_seconds)) if self.eval_seconds else estimate

    def steps_that_fit(self, step: int, used: float, eval_cost: float) -> int:
        """``step`` plus the k more steps whose time, with a validation every ``eval_every``
        steps and one at the end, fits in what is left of the budget."""
        left = self.seconds - used - eval_cost
        per_step = self.step_seconds() + eval_cost / self.eval_every
        return step + max(0, math.floor(left / per_step)) if per_step > 0 else step


def _lr_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress

    return f


class Trainer:
    """Fits ``model`` on tokenized examples. One instance per process (DDP: one per rank)."""

    def __init__(
        self, model: Any, cfg: TrainConfig, *, train: list[TokenizedExample], validation: list[TokenizedExample],
        pad_id: int, seed: int, run_dir: Path, rehearsal: list[TokenizedExample] | None = None,
        accelerator: Any = None, log: LogFn | None = None,
    ):
        self.cfg, self.seed, self.pad_id, self.run_dir = cfg, seed, pad_id, run_dir
        self.train_set, self.val_set, self.rehearsal = train, validation, rehearsal or []
        self.acc = accelerator or make_accelerator(cfg)
        self.log = log or (lambda event: None)
        # Speed (measured on the starter, benchmarks/train_throughput.py): attention per packed
        # example, logits only where the next token is trained, a cheaper dropout on CPUs.
        self.packed_attention = cfg.packing and not cfg.compile and use_packed_attention(model)
        if self.acc.device.type == "cpu":
            use_fast_dropout(model)
        if precision_for(cfg) == "bf16" and cfg.method == "lora":
            use_bf16_frozen_weights(model)
        self.sparse_logits = cfg.method != "prompt_tuning" and supports_logits_mask(model)
        self.mask_format, self.mask_dtype = mask_format_for(model)
        opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.total_steps = self._count_steps()
        warmup = int(cfg.warmup_ratio * self.total_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.scheduler, warmup, self.total_steps))
        self.model, self.optimizer = self.acc.prepare(model, opt)
        self.scheduler = sched
        self.state = TrainerState()
        self.ckpt_dir = run_dir / "checkpoints"
        self.planned_steps = self.total_steps  # from max_steps / epochs: the budget never exceeds it
        self.budget = _Budget(cfg.budget_seconds, cfg.eval_every) if cfg.budget_seconds else None

    # ------------------------------------------------------------------ data plan
    @property
    def world(self) -> int:
        return self.acc.num_processes

    def _epoch_examples(self, epoch: int) -> list[TokenizedExample]:
        if not self.rehearsal or self.cfg.rehearsal.ratio == 0:
            return self.train_set
        r = self.cfg.rehearsal.ratio
        n = round(len(self.train_set) * r / (1 - r))
        rng = np.random.default_rng([self.seed, epoch, 7])
        picks = rng.choice(len(self.rehearsal), size=n, replace=n > len(self.rehearsal))
        return self.train_set + [self.rehearsal[i] for i in picks]

    def epoch_batches(self, epoch: int) -> list[Batch]:
        """The epoch's micro-batches, in order: a pure function of (seed, epoch).

        Each batch carries ``_tokens`` (its non-padding tokens) for throughput accounting.
        """
        return [self._collate(g) for g in self._epoch_groups(epoch)]

    def _epoch_groups(self, epoch: int) -> list[list[Any]]:
        """The epoch's micro-batches before collation (packed rows, or examples). Training
        collates one step at a time: a whole epoch of packed rows' ``[L, L]`` masks held at
        once was ~1 MiB per 1024-token row (~600 MiB for the sample project)."""
        examples = self._epoch_examples(epoch)
        bs = self.cfg.batch_size
        if self.cfg.packing:
            rows = pack_examples(examples, max_length=self.cfg.max_length,
                                 share_prefix=self.cfg.share_prefix and self.mask_format != "none").rows
            order = np.random.default_rng([self.seed, epoch]).permutation(len(rows))
            return [[rows[i] for i in order[s : s + bs]] for s in range(0, len(order), bs)]
        sampler = LengthGroupedBatchSampler([len(e) for e in examples], bs, seed=self.seed)
        sampler.set_epoch(epoch)
        return [[examples[i] for i in b] for b in sampler]

    def _collate(self, group: list[Any]) -> Batch:
        c = self.cfg
        if c.packing:
            return collate_packed(group, pad_id=self.pad_id, mask_format=self.mask_format,
                                  mask_dtype=self.mask_dtype) | {"_tokens": torch.tensor(sum(r.example_tokens for r in group))}
        return collate_padded(group, pad_id=self.pad_id, max_length=c.max_length) | {
            "_tokens": torch.tensor(sum(min(len(e), c.max_length) for e in group))}

    def _micro_per_step(self) -> int:
        return self.cfg.grad_accum * self.world

    def _count_steps(self) -> int:
        if self.cfg.max_steps:
            return self.cfg.max_steps
        per_epoch = math.ceil(len(self._epoch_groups(0)) / self._micro_per_step())
        return max(1, math.ceil(per_epoch * self.cfg.epochs))

    # ------------------------------------------------------------------ the loop
    def fit(self, *, resume: bool = False) -> FitResult:
        if resume:
            self._resume()
        start, tokens_at_start = time.perf_counter(), self.state.tokens_seen
        used_before = self.state.seconds
        interrupted = False
        kill_at = int(os.environ.get(KILL_ENV, "0"))
        try:
            lap = time.perf_counter()
            for batches in self._steps():
                self._train_step(batches)
                evaluated = self.state.step % self.cfg.eval_every == 0 or self.state.step == self.total_steps
                if self.budget:  # a step's wall time: collation, forward/backward, optimizer, logging
                    self.budget.step_times.append(time.perf_counter() - lap)
                if evaluated:
                    t0 = time.perf_counter()
                    self._evaluate()
                    if self.budget:
                        self.budget.eval_seconds.append(time.perf_counter() - t0)
                self.state.seconds = used_before + time.perf_counter() - start
                if self.budget and self.budget.ready(self.state.seconds, evaluated):
                    self._fit_to_budget()
                    if self.state.step == self.total_steps and not evaluated:
                        self._evaluate()  # the budget ended the run here: validate its last step
                if self.state.step % self.cfg.save_every == 0:
                    self.save()
                lap = time.perf_counter()
                if kill_at and self.state.step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.state.stopped_early:
                    break
        except KeyboardInterrupt:
            interrupted = True
            self.optimizer.zero_grad(set_to_none=True)
            self.save()  # the state as of the last completed step
        elapsed = time.perf_counter() - start
        self.state.seconds = used_before + elapsed
        rate = (self.state.tokens_seen - tokens_at_start) / max(elapsed, 1e-9)
        return FitResult(self.state, interrupted, elapsed, rate)

    def _fit_to_budget(self) -> None:
        """Set the step count so the loop ends within ``train.time_budget`` (validation included),
        and stretch or squeeze the LR schedule to it; never beyond the planned steps."""
        assert self.budget is not None
        st = self.state
        eval_cost = self.budget.eval_cost(self._estimated_eval_seconds())
        total = self.budget.steps_that_fit(st.step, st.seconds, eval_cost)
        total = max(st.step, min(total, self.planned_steps))
        if total == self.total_steps:
            return
        self._set_total_steps(total)
        self.log({"event": "budget", "step": st.step, "total_steps": total, "planned_steps": self.planned_steps,
                  "budget_seconds": self.budget.seconds, "used_seconds": round(st.seconds, 1),
                  "seconds_per_step": round(self.budget.step_seconds(), 3), "eval_seconds": round(eval_cost, 1)})

    def _estimated_eval_seconds(self) -> float:
        """Before the first validation: its forward passes cost about a third of a training
        step's forward + backward per token."""
        examples = self.val_set[: self.cfg.eval_examples] if self.cfg.eval_examples else self.val_set
        val_tokens = sum(min(len(e), self.cfg.max_length) for e in examples)
        steps = [e for e in self.state.history if "event" not in e]
        step_tokens = np.mean([e["tokens"] for e in steps]) if steps else 1.0
        return self.budget.step_seconds() * val_tokens / max(step_tokens, 1.0) / 3 if self.budget else 0.0

    def _set_total_steps(self, total: int) -> None:
        self.total_steps = self.state.total_steps = total
        warmup = int(self.cfg.warmup_ratio * total)
        self.scheduler.lr_lambdas = [_lr_lambda(self.cfg.scheduler, warmup, total)
                                     for _ in self.scheduler.lr_lambdas]

    def _steps(self) -> Iterator[list[Batch]]:
        """Yield the global micro-batches of each remaining optimizer step."""
        per = self._micro_per_step()
        while self.state.step < self.total_steps:
            groups = self._epoch_groups(self.state.epoch)
            while self.state.micro < len(groups) and self.state.step < self.total_steps:
                yield [self._collate(g) for g in groups[self.state.micro : self.state.micro + per]]
            if self.state.step >= self.total_steps:
                return
            self.state.epoch += 1
            self.state.micro = 0

    def _train_step(self, batches: list[Batch]) -> None:
        model, c = self.model, self.cfg
        model.train()
        n_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        step_loss = torch.zeros((), device=self.acc.device)
        t0 = time.perf_counter()
        mine = self._my_share(batches, scale=self.world / max(n_tokens, 1))
        for i, (batch, scale) in enumerate(mine):
            last = i == len(mine) - 1
            ctx = contextlib.nullcontext() if last or self.world == 1 else self.acc.no_sync(model)
            with ctx, self.acc.autocast():
                loss_sum = self._loss_sum(model, batch)
                self.acc.backward(loss_sum * scale)
            if scale:
                step_loss += loss_sum.detach()
        if c.max_grad_norm:
            self.acc.clip_grad_norm_(model.parameters(), c.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = self.acc.reduce(step_loss, reduction="sum") if self.world > 1 else step_loss
        real_tokens = sum(int(b["_tokens"]) for b in batches)
        self.state.step += 1
        self.state.micro += len(batches)
        self.state.tokens_seen += real_tokens
        event = {"step": self.state.step, "total_steps": self.total_steps, "epoch": self.state.epoch,
                 "loss": float(step_loss) / max(n_tokens, 1), "lr": self.scheduler.get_last_lr()[0],
                 "trained_tokens": n_tokens, "tokens": real_tokens, "seconds": time.perf_counter() - t0}
        self.state.history.append(event)
        self.log({"event": "step", **event})

    def _my_share(self, batches: list[Batch], scale: float) -> list[tuple[Batch, float]]:
        """This rank's micro-batches of the step (every world_size-th), with their loss scale.

        The last step of an epoch can hold fewer micro-batches than there are ranks. A rank
        with none must still run one backward, or the others wait forever in the gradient
        all-reduce; it re-runs the step's first micro-batch with scale 0, contributing a zero
        gradient, so the result equals the single-process step on the same micro-batches.
        """
        mine = [(b, scale) for b in batches[self.acc.process_index :: self.world]]
        return mine or [(batches[0], 0.0)]

    def _loss_sum(self, model: Any, batch: Batch) -> torch.Tensor:
        """Sum of token cross-entropies over the trained tokens of one micro-batch."""
        extra = {"packed_segments": segment_bounds(batch["_seq_ids"])} if (
            self.packed_attention and "_seq_ids" in batch) else {}
        batch = {k: v.to(self.acc.device) for k, v in batch.items() if not k.startswith("_")}
        logits, targets = self._trained_logits(model, batch, extra)
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")

    def _trained_logits(self, model: Any, batch: Batch, extra: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 logits ``[n, vocab]`` at the n positions whose next token is trained, and
        those tokens. With ``sparse_logits`` the LM head runs on those positions alone: in chat
        data most positions are prompt, and the ``[rows, length, vocab]`` logits were the largest
        tensor of a step (~200 MB per 1k tokens in float32) and ~20% of its time."""
        labels = batch["labels"][:, 1:]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        keep = labels != IGNORE_INDEX
        if self.sparse_logits:
            keep_at = torch.nn.functional.pad(keep, (0, 1))  # logit i predicts token i + 1
            out = model(**inputs, use_cache=False, logits_to_keep=keep_at, **extra)
            return out.logits.float(), labels[keep]
        logits = model(**inputs, use_cache=False, **extra).logits
        logits = logits[:, -labels.shape[1] - 1 : -1]  # prompt tuning prepends virtual tokens
        return logits[keep].float(), labels[keep]

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss (token-weighted) and next-token accuracy on trained tokens."""
        if not self.val_set:
            return {}
        model = self.model
        model.eval()
        examples = self.val_set[: self.cfg.eval_examples] if self.cfg.eval_examples else self.val_set
        loss_sum, correct, count = 0.0, 0, 0
        for s in range(0, len(examples), self.cfg.batch_size):
            chunk = examples[s : s + self.cfg.batch_size]
            batch = collate_padded(chunk, pad_id=self.pad_id, max_length=self.cfg.max_length)
            batch = {k: v.to(self.acc.device) for k, v in batch.items()}
            with self.acc.autocast():
                logits, targets = self._trained_logits(model, batch, {})
            loss_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(-1) == targets).sum())
            count += targets.numel()
        return {"val_loss": loss_sum / max(count, 1), "val_token_accuracy": correct / max(count, 1),
                "val_tokens": count}

    def _evaluate(self) -> None:
        metrics = self.validate()
        if not metrics:
            return
        st = self.state
        improved = metrics["val_loss"] < st.best_val_loss - 1e-6
        if improved:
            st.best_val_loss, st.best_step, st.bad_evals = metrics["val_loss"], st.step, 0
            self._save_best()
        else:
            st.bad_evals += 1
            patience = self.cfg.early_stopping_patience
            st.stopped_early = patience is not None and st.bad_evals >= patience
        event = {"step": st.step, **metrics, "best_val_loss": st.best_val_loss, "stopped_early": st.stopped_early}
        st.history.append({"event": "eval", **event})
        self.log({"event": "eval", **event})

    # ------------------------------------------------------------------ checkpoints
    def _unwrapped(self) -> Any:
        return self.acc.unwrap_model(self.model)

    def _save_best(self) -> None:
        if self.acc.is_main_process:
            from safetensors.torch import save_file

            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / ".best.safetensors.tmp"
            save_file(trainable_state(self._unwrapped(), self.cfg), str(tmp))
            os.replace(tmp, self.run_dir / "best.safetensors")

    def load_best(self) -> None:
        """Put the best-validation weights into the model (used before export)."""
        from safetensors.torch import load_file

        # Only rank 0 writes best.safetensors (in the last _evaluate, with no collective
        # after it); without this barrier another rank could read the previous best.
        self.acc.wait_for_everyone()
        best = self.run_dir / "best.safetensors"
        if best.exists():
            load_trainable_state(self._unwrapped(), self.cfg, load_file(str(best)))

    def save(self) -> None:
        rank_rng = self._rank_rng_states()  # a collective: every rank calls it
        if self.acc.is_main_process:
            name = f"{STEP_PREFIX}{self.state.step:06d}"
            st = self.state
            st.ckpt_scores[name] = st.best_val_loss if st.best_step == st.step else _last_val(st)
            save_checkpoint(
                self.ckpt_dir / name, weights=trainable_state(self._unwrapped(), self.cfg),
                optimizer=self.optimizer, scheduler=self.scheduler,
                state=_state_dict(st) | {"rank_rng": rank_rng},
            )
            prune_checkpoints(self.ckpt_dir, self.cfg.keep_best, st.ckpt_scores)
        self.acc.wait_for_everyone()

    def _resume(self) -> None:
        ckpts = list_checkpoints(self.ckpt_dir)
        if not ckpts:
            return
        weights, state = load_checkpoint(ckpts[-1], optimizer=self.optimizer, scheduler=self.scheduler)
        load_trainable_state(self._unwrapped(), self.cfg, weights)
        rank_rng = state.pop("rank_rng", None)
        if rank_rng and len(rank_rng) == self.world:  # else: rank 0's RNG, restored above
            _set_rng_state(rank_rng[self.acc.process_index], self.acc.device)
        self.state = TrainerState(**state)
        if self.state.total_steps:  # a budget had set it: the schedule resumes as it was
            self._set_total_steps(self.state.total_steps)
        self.log({"event": "resumed", "step": self.state.step, "checkpoint": str(ckpts[-1])})

    def _rank_rng_states(self) -> list[dict[str, str]]:
        """Every rank's RNG state, rank order. rng.safetensors holds only rank 0's, but under
        DDP each rank draws its own dropout masks on batches of its own shapes, so the ranks'
        generators drift apart; exact resume needs each one back. Hex strings: they travel
        in state.json, inside the checkpoint's atomic rename."""
        mine = {"cpu": torch.get_rng_state().numpy().tobytes().hex()}
        if self.acc.device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(self.acc.device).numpy().tobytes().hex()
        if self.world == 1:
            return [mine]
        from accelerate.utils import gather_object

        return gather_object([mine])


def _set_rng_state(saved: dict[str, str], device: torch.device) -> None:
    def as_tensor(hex_state: str) -> torch.Tensor:
        return torch.frombuffer(bytearray.fromhex(hex_state), dtype=torch.uint8)

    torch.set_rng_state(as_tensor(saved["cpu"]))
    if "cuda" in saved and device.type == "cuda":
        torch.cuda.set_rng_state(as_tensor(saved["cuda"]), device)


def _last_val(st: TrainerState) -> float:
    evals = [h for h in st.history if h.get("event") == "eval"]
    return evals[-1]["val_loss"] if evals else float("inf")


def _state_dict(st: TrainerState) -> dict[str, Any]:
    return {k: getattr(st, k) for k in TrainerState.__dataclass_fields__}


class FastDropout(torch.nn.Dropout):
    """``nn.Dropout`` with the same distribution up to p's rounding to 1/65536 (keep with
    probability 1 - p, scale by 1 / (1 - p)), drawn from 16-bit slices of random 64-bit words.

    On a CPU, ``F.dropout``'s ``bernoulli_`` kernel draws one generator call per element, and
    ``torch.rand`` one per element too; four uniform 16-bit draws per 64-bit word and a compare
    are 2.5x cheaper than ``rand() >= p`` (1.5M elements: 2.6 vs 6.6 ms), and the saved mask is 1
    byte, not 4. PEFT's LoRA dropout was ~25% of a LoRA step on the starter before this (then
    ~15% with ``rand``). On GPUs ``F.dropout`` is a fused kernel and stays."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        drop_levels = round(self.p * 65536)  # int16 draws below -32768 + this are dropped
        keep = words.view(torch.int16)[:n].view(x.shape) >= drop_levels - 32768
        # one mask in x's dtype, scale folded in: backward is then a single multiply
        return x * keep.to(x.dtype).mul_(65536 / (65536 - drop_levels))


def use_bf16_frozen_weights(model: Any) -> int:
    """Store the frozen base weights of LoRA layers in bfloat16; returns how many layers.

    Under bf16 autocast every ``linear`` casts its float32 weight to bf16 on each forward (the
    cast of a frozen weight is not cached), so this changes no matmul result
    (:mod:`tunesmith.models.precision`). It removes ~130M element casts per step on the starter
    (~9% of a CPU step) and halves the frozen weights' memory. The LoRA weights, the
    embeddings, norms and the LM head stay float32; DoRA layers and tied weights are left alone.
    """
    from peft.tuners.lora import LoraLayer

    from tunesmith.models.precision import store_bf16

    return store_bf16(model, lambda m: m.get_base_layer()
                      if isinstance(m, LoraLayer) and not any(m.use_dora.values()) else None)


def use_fast_dropout(model: Any) -> int:
    """Replace PEFT's LoRA dropout modules (plain ``nn.Dropout``) with :class:`FastDropout`;
    returns how many. A subclass, so PEFT's ``isinstance`` checks still see a dropout."""
    count = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if isinstance(drops, torch.nn.ModuleDict):
            for name, drop in drops.items():
                if type(drop) is torch.nn.Dropout:
                    drops[name] = FastDropout(drop.p)
                    count += 1
    return count


def supports_logits_mask(model: Any) -> bool:
    """Whether the model's forward takes a boolean ``[B, L]`` ``logits_to_keep`` (transformers'
    ``slice_logits_to_keep``: logits for the True positions only, flattened). Remote-code
    models that predate it get the full logits."""
    import inspect
    import sys

    base = getattr(model, "_orig_mod", model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    module = sys.modules.get(type(base).__module__)
    return ("logits_to_keep" in inspect.signature(base.forward).parameters
            and hasattr(module, "slice_logits_to_keep"))


def make_accelerator(cfg: TrainConfig) -> Any:
    """This process's Accelerator: the whole job when run alone; one rank of DDP / FSDP /
    DeepSpeed under ``accelerate launch``, which passes the topology in environment variables.
    ``cpu=True`` where no GPU is visible makes a multi-process CPU launch use gloo."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from tunesmith.errors import TunesmithError

    kwargs = {"cpu": not torch.cuda.is_available(), "mixed_precision": precision_for(cfg)}
    try:
        acc = Accelerator(**kwargs)
    except ValueError as exc:
        # accelerate keeps one global state per process: a second `train` call in the same
        # process (a notebook, the test suite) with another precision must reset it. The
        # process group (PartialState) is kept.
        if "already been initialized" not in str(exc):
            raise
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()
        acc = Accelerator(**kwargs)
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # Checkpoints and export gather weights and optimizer state on rank 0 alone; sharded
        # states need a collective gather first. Fail now, not at the first checkpoint.
        raise TunesmithError(
            f"`accelerate launch` with {acc.distributed_type.value} is not supported yet: use DDP "
            "(examples/accelerate/ddp_gpu.yaml); see examples/accelerate/README.md"
        )
    return acc


def precision_for(cfg: TrainConfig) -> str:
    """accelerate's mixed_precision for ``cfg.precision`` on this hardware."""
    if cfg.precision == "fp32":
        return "no"
    if cfg.precision in ("bf16", "fp16"):
        return cfg.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    from tunesmith.models.precision import cpu_bf16_pays

    return "bf16" if cpu_bf16_pays() else "no"