"""``run``: prepare -> train -> eval from one config, reusing every stage whose inputs have not
changed (same source bytes + data config -> the same snapshot; same snapshot + model/train
config -> the same model version; same model + pack + eval config -> the same eval). A failing
stage names itself; the stages before it stay published and are reused by the next run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunesmith.config import Config
from tunesmith.errors import TunesmithError

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class RunSummary:
    snapshot: Any = None
    model: Any = None
    evaluation: Any = None
    seconds: dict[str, float] = field(default_factory=dict)


class StageError(TunesmithError):
    def __init__(self, stage: str, exc: Exception):
        self.stage = stage
        super().__init__(f"stage '{stage}' failed: {exc}\n(earlier stages are kept and will be reused)")


def run_loop(
    cfg: Config, *, prepare_progress: Any = None, train_log: LogFn | None = None, eval_log: LogFn | None = None,
    stage_log: LogFn | None = None,
) -> RunSummary:
    """Run (or reuse) the three stages in order; raise StageError naming the failing one.
    Every optional package the config needs is checked first, before any stage starts."""
    from tunesmith.deps import preflight

    preflight(cfg, ["prepare", "train", "eval"])
    from tunesmith.data.pipeline import prepare
    from tunesmith.evaluate.runner import evaluate
    from tunesmith.train.recipe import train

    say = stage_log or (lambda e: None)
    summary = RunSummary()
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("prepare", lambda: prepare(cfg, progress=prepare_progress)),
        # resume=True: an interrupted run of the same config continues; none starts fresh
        ("train", lambda: train(cfg, snapshot=summary.snapshot.snapshot_id, log=train_log, resume=True)),
        ("eval", lambda: evaluate(cfg, model=summary.model.model_id, snapshot=summary.snapshot.snapshot_id,
                                  log=eval_log, reuse=True)),
    ]
    for name, fn in stages:
        say({"event": "stage_start", "stage": name})
        t0 = time.perf_counter()
        try:
            result = fn()
        except TunesmithError as exc:
            raise StageError(name, exc) from exc
        except Exception as exc:
            exc.tunesmith_stage = name  # type: ignore[attr-defined]  # the CLI names the stage
            raise
        summary.seconds[name] = round(time.perf_counter() - t0, 1)
        if name == "prepare" and hasattr(prepare_progress, "close"):
            prepare_progress.close()  # its bars must not stay live under the next stage
        setattr(summary, {"prepare": "snapshot", "train": "model", "eval": "evaluation"}[name], result)
        if name == "train" and result.interrupted:
            raise TunesmithError("training was interrupted; run again to resume it (`tunesmith train --resume`)")
        say({"event": "stage_done", "stage": name, "seconds": summary.seconds[name],
             "reused": bool(getattr(result, "reused", False))})
    return summary
