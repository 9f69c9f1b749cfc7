"""Optional forgetting check with lm-evaluation-harness: the same tasks on the base and the
fine-tuned model, reported side by side.

The harness runs on the models the eval engine already holds (no second load): the base with
adapters disabled, then the fine-tuned model. Tasks come from the harness's registry (their
datasets must be reachable: the hub, or a local cache) or from ``include_path``, a folder of
task YAMLs, e.g. a multiple-choice task over a local JSON file, which works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.config import LmEvalConfig
from tunesmith.deps import LM_EVAL, require
from tunesmith.errors import TunesmithError


def _metrics(task_result: dict[str, Any]) -> dict[str, float]:
    """{'acc': 0.5, 'acc_norm': 0.6} from the harness's {'acc,none': 0.5, 'acc_stderr,none': ...}."""
    out = {}
    for key, value in task_result.items():
        name, _, _filter = key.partition(",")
        if isinstance(value, int | float) and not isinstance(value, bool) and not name.endswith("_stderr"):
            out[name] = float(value)
    return out


def run_harness(engine: Any, cfg: LmEvalConfig, *, include_dir: Path | None, adapter: str | None) -> dict[str, Any]:
    """``{task: {metric: {"before": x, "after": y}}}``; ``adapter`` is the fine-tuned model's
    name in ``engine`` (None: base only, "after" left out); ``include_dir``: extra task YAMLs.

    Raises:
        TunesmithError: lm-eval is not installed, a task name is unknown, or a task's dataset
            cannot be loaded (offline without a local copy).
    """
    require(LM_EVAL)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    include = str(include_dir) if include_dir is not None else None
    if include_dir is not None and not include_dir.is_dir():
        raise TunesmithError(f"eval.lm_eval.include_path: folder not found: {include_dir}")
    manager = TaskManager(include_path=include)
    unknown = [t for t in cfg.tasks if t not in manager.all_tasks]
    if unknown:
        raise TunesmithError(f"eval.lm_eval.tasks: unknown task(s) {unknown}; see `lm-eval ls tasks`, or add "
                             "a task YAML under eval.lm_eval.include_path")
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for who, name in (("before", None), ("after", adapter)):
        if who == "after" and adapter is None:
            break
        with engine.running(name):
            lm = HFLM(pretrained=engine.model, tokenizer=engine.tokenizer, batch_size=cfg.batch_size)
            try:
                out = lm_eval.simple_evaluate(model=lm, tasks=list(cfg.tasks), limit=cfg.limit,
                                              task_manager=manager, log_samples=False, verbosity="ERROR")
            except Exception as exc:  # dataset download/parse errors come from many libraries
                raise TunesmithError(f"eval.lm_eval: the harness failed on {cfg.tasks} "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); are the "
                                     "tasks' datasets reachable from here?") from exc
        for task, result in (out or {}).get("results", {}).items():
            for metric, value in _metrics(result).items():
                scores.setdefault(task, {}).setdefault(metric, {})[who] = value
    return scores
