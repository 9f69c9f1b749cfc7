"""Champion vs challenger, paired, on the same cases: the frozen eval pack and the new slice.

One engine holds the base model once and both versions as named adapters (a full fine-tune loads
as a second model); every case is answered by both, the way the ``finetuned`` rung of ``eval``
asks (the case's own system prompt, the pack's output spec and decoding), scored with the same
metrics, and compared case by case: a paired bootstrap CI of (challenger − champion) on the
headline metric and on each label field.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunesmith.config import Config, OutputSpec
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.pack import EvalPack
from tunesmith.evaluate.results import FIELD_PREFIX, Comparison, Rung
from tunesmith.workspace import Artifact, Workspace

LogFn = Callable[[dict[str, Any]], None]
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class PackComparison:
    """Both versions on one pack."""

    pack: str
    kind: str  # frozen | new_slice
    cases: int
    headline: str
    champion: Rung
    challenger: Rung
    diff: Comparison  # challenger − champion on the headline
    fields: dict[str, Comparison]  # challenger − champion per label field
    field_metric: dict[str, str] = field(default_factory=dict)  # field -> the metric scoring it

    def to_dict(self) -> dict[str, Any]:
        return {"pack": self.pack, "kind": self.kind, "cases": self.cases, "headline": self.headline,
                "champion": _mean(self.champion, self.headline), "challenger": _mean(self.challenger, self.headline),
                "diff": self.diff.to_dict(),
                "fields": {f: {"metric": self.metric_of(f), "champion": _mean(self.champion, self.metric_of(f)),
                               "challenger": _mean(self.challenger, self.metric_of(f)), **c.to_dict()}
                           for f, c in self.fields.items()}}

    def metric_of(self, name: str) -> str:
        return self.field_metric.get(name, FIELD_PREFIX + name)


def _mean(rung: Rung, metric: str) -> float | None:
    return rung.mean(metric)


def field_metrics(spec: OutputSpec) -> dict[str, str]:
    """Field name -> the metric scoring it: each JSON label field, the label of a label answer,
    else the headline (free text has no fields; its one "field" is the answer)."""
    if spec.label_fields:
        return {f: FIELD_PREFIX + f for f in spec.label_fields}
    if spec.kind == "label":
        return {"label": "label_acc"}
    return {"answer": spec.headline_metric()}


def load_engine(cfg: Config, champion: Artifact, challenger: Artifact) -> Any:
    """One engine: the base once, both versions as adapters. Refuses versions of two bases."""
    from tunesmith.generate.engine import Engine, engine_options
    from tunesmith.train.recipe import model_reference

    records = [json.loads((a.path / "model_version.json").read_text()) for a in (champion, challenger)]
    prints = {r.get("base_fingerprint") for r in records}
    if len(prints) > 1:
        raise TunesmithError(f"the champion {champion.id[:12]} and the challenger {challenger.id[:12]} were trained on "
                             "different base models; a paired comparison needs one base")
    base = records[1].get("base_location") or model_reference(cfg)
    return Engine.load(base, adapters={CHAMPION: champion.path, CHALLENGER: challenger.path}, **engine_options(cfg))


def answer(engine: Any, cfg: Config, pack: EvalPack, spec: OutputSpec, adapter: str) -> Rung:
    """``adapter``'s answers to every case of ``pack``, scored (as eval's ``finetuned`` rung)."""
    from tunesmith.evaluate.metrics import aggregate, score_example
    from tunesmith.evaluate.outputs import grammar_for
    from tunesmith.evaluate.strategies import STRATEGIES, build_conversation, query_text
    from tunesmith.generate.sampling import GenerationConfig

    convs = [build_conversation(STRATEGIES["finetuned"], c, instructions=cfg.eval.instructions) for c in pack.cases]
    g = cfg.eval.generation
    t0 = time.perf_counter()
    confidence = None
    if spec.decoding == "rank" and spec.labels:
        from tunesmith.evaluate.runner import _rank

        gens, confidence = _rank(engine, convs, list(spec.labels), adapter)
    else:
        gens = engine.generate(convs, GenerationConfig(max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                                       seed=cfg.seed, grammar=grammar_for(spec)), adapter=adapter)
    wall = time.perf_counter() - t0
    scores = [score_example(gen.text, case.answer_text(), schema=spec.json_schema,
                            label_fields=spec.label_fields or None, labels=spec.labels, input_text=query_text(case))
              for gen, case in zip(gens, pack.cases, strict=True)]
    return Rung.model_validate({
        "metrics": aggregate(scores, n_resamples=cfg.eval.bootstrap_resamples, seed=cfg.seed),
        "scores": scores, "answers": [x.text for x in gens],
        **({"confidence": confidence} if confidence is not None else {}),
        "cost": {"wall_seconds": round(wall, 2), "seconds_per_answer": round(wall / max(len(gens), 1), 3),
                 "prompt_tokens": float(np.mean([x.prompt_tokens for x in gens])) if gens else None,
                 "answer_tokens": float(np.mean([x.tokens for x in gens])) if gens else None},
    })


def paired(champion: Rung, challenger: Rung, spec: OutputSpec, cfg: Config, *, pack: str,
           kind: str) -> PackComparison:
    """The paired differences (challenger − champion) of two scored rungs on the same cases."""
    from tunesmith.evaluate.metrics import compare

    kw = {"n_resamples": cfg.eval.bootstrap_resamples, "seed": cfg.seed}
    headline = spec.headline_metric()

    def diff(metric: str) -> Comparison:
        return Comparison.model_validate({"baseline": CHAMPION, "rung": "finetuned",
                                          **compare(challenger.scores, champion.scores, metric, **kw)})

    metrics = field_metrics(spec)
    return PackComparison(pack, kind, len(challenger.scores), headline, champion, challenger, diff(headline),
                          {f: diff(m) for f, m in metrics.items()}, metrics)


def stored_answers(ws: Workspace, cfg: Config, version: str, pack: EvalPack) -> tuple[Rung, str] | None:
    """``version``'s ``finetuned`` answers on ``pack`` from an earlier eval with the same answer
    settings (evaluate.runner.answers_key), and that eval's id; None when there is none."""
    from tunesmith.evaluate.results import load_results
    from tunesmith.evaluate.runner import answers_key

    key = answers_key(cfg, version, pack.id)
    for art in reversed(ws.list("eval")):
        if art.meta.get("answers_key") != key:
            continue
        rung = load_results(art.path).ladder.get("finetuned")
        if rung is not None and len(rung.scores) == len(pack.cases):
            return rung, art.id
    return None


def compare_on(engine: Any, cfg: Config, pack: EvalPack, kind: str, log: LogFn,
               known: dict[str, Rung] | None = None) -> PackComparison:
    """Both versions on ``pack``; a version in ``known`` keeps the answers given there."""
    spec = OutputSpec(**pack.settings["output"])
    log({"event": "compare_start", "pack": pack.id, "kind": kind, "cases": len(pack.cases),
         "reused": sorted(known or {})})
    rungs = {who: (known or {}).get(who) or answer(engine, cfg, pack, spec, who) for who in (CHAMPION, CHALLENGER)}
    out = paired(rungs[CHAMPION], rungs[CHALLENGER], spec, cfg, pack=pack.id, kind=kind)
    log({"event": "compare_done", "pack": pack.id, "kind": kind, "diff": out.diff.diff,
         "low": out.diff.low, "high": out.diff.high})
    return out
