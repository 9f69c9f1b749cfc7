"""``eval``: run the baseline ladder on one frozen eval pack and decide.

    1. the eval pack (pinned, or built from the snapshot's test split) and the model version
    2. one engine: the base model once, the fine-tuned adapter on top
    3. each rung: build conversations (strategies), generate, score every case
    4. CIs for every metric, paired differences between rungs, test-split perplexity
    5. probes (refusal, injection) and the forgetting check, base vs fine-tuned
    6. gate + recommendation; report (HTML, Markdown, JUnit), results in the workspace DB
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import Config, GateConfig, OutputSpec
from tunesmith.data.example import Example
from tunesmith.data.pipeline import load_split
from tunesmith.deps import preflight
from tunesmith.errors import TunesmithError
from tunesmith.evaluate import gate as gate_mod
from tunesmith.evaluate.outputs import allowed_values, grammar_for
from tunesmith.evaluate.pack import EvalPack, build_pack, load_pack
from tunesmith.evaluate.results import Check, EvalResults, GateResult, load_results
from tunesmith.evaluate.strategies import (
    STRATEGIES,
    build_conversation,
    prompt_messages,
    query_text,
)
from tunesmith.workspace import Artifact, Workspace

LogFn = Callable[[dict[str, Any]], None]
FT_ADAPTER = "finetuned"


@dataclass
class EvalResult:
    eval_id: str
    path: Path
    results: EvalResults
    checks: list[Check] = field(default_factory=list)
    reused: bool = False

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


# ---------------------------------------------------------------------------- 1. inputs
def _model_version(ws: Workspace, model: str | None, needed: bool) -> Artifact | None:
    if model:
        return ws.get("model", model)
    latest = ws.latest("model")
    if latest is None and needed:
        raise TunesmithError(
            f"no model version in {ws.root}: run `tunesmith train` first, or drop the fine-tuned "
            "rungs (eval.rungs: [zero_shot, few_shot, rag])"
        )
    return latest


def _pack(cfg: Config, ws: Workspace, snapshot: str | None) -> tuple[EvalPack, str | None]:
    from tunesmith.train.recipe import resolve_snapshot

    if cfg.eval.pack:
        pack = load_pack(ws, cfg.eval.pack)
        return pack, pack.meta.get("snapshot")
    snapshot_id, snap_dir = resolve_snapshot(ws, snapshot)
    return build_pack(cfg, ws, snapshot_id, snap_dir), snapshot_id


def _engine(cfg: Config, version: Artifact | None) -> Any:
    from tunesmith.generate.engine import Engine, engine_options
    from tunesmith.train.recipe import model_reference

    record = json.loads((version.path / "model_version.json").read_text()) if version else {}
    base = record.get("base_location") or model_reference(cfg)
    adapters = {FT_ADAPTER: version.path} if version else None
    return Engine.load(base, adapters=adapters, **engine_options(cfg))


# ---------------------------------------------------------------------------- 3. the ladder
@dataclass
class _Helpers:
    fewshot: Callable[[Example], list[Example]] | None
    context: Callable[[Example], str] | None


def _helpers(cfg: Config, rungs: list[str], snapshot_id: str | None, ws: Workspace, engine: Any) -> _Helpers:
    fewshot = context = None
    if any(STRATEGIES[r].uses_fewshot for r in rungs):
        from tunesmith.evaluate.fewshot import FewShotSelector

        if not snapshot_id:
            raise TunesmithError("few-shot needs the snapshot the pack came from; it is not in this workspace")
        train = load_split(ws.get("snapshot", snapshot_id).path, "train")
        selector = FewShotSelector(train)
        fs = cfg.eval.few_shot

        def count_tokens(text: str) -> int:  # one function, so the selector's cache is reused
            return len(engine.tokenizer(text)["input_ids"])

        def fewshot(case: Example, k: int = fs.k) -> list[Example]:
            return selector.select(query_text(case), k, token_budget=fs.token_budget,
                                   count_tokens=count_tokens, exclude_ids={case.id})

    if any(STRATEGIES[r].uses_retrieval for r in rungs):
        context = _retrieval(cfg)
    return _Helpers(fewshot, context)


def _retrieval(cfg: Config) -> Callable[[Example], str]:
    from tunesmith.evaluate.retrieval import Retriever, format_context, load_knowledge_base

    if not cfg.data.knowledge_base:
        raise TunesmithError("the rag rungs need data.knowledge_base (a folder of policy documents); "
                             "set it or drop rag/finetuned_rag from eval.rungs")
    rc = cfg.eval.rag
    retriever = Retriever(load_knowledge_base(cfg.resolve(cfg.data.knowledge_base), chunk_chars=rc.chunk_chars),
                          method=rc.method)
    cache: dict[str, str] = {}

    def context(case: Example) -> str:
        if case.id not in cache:
            cache[case.id] = format_context(retriever.search(query_text(case), rc.k), max_chars=rc.max_chars)
        return cache[case.id]

    return context


def _score_rung(answers: list[Any], cases: list[Example], convs: list[list[dict]], spec: OutputSpec,
                helpers: _Helpers, uses_retrieval: bool) -> list[dict[str, float | None]]:
    from tunesmith.evaluate.metrics import score_example

    scores = []
    for gen, case, _conv in zip(answers, cases, convs, strict=True):
        ctx = helpers.context(case) if uses_retrieval and helpers.context else ""
        scores.append(score_example(gen.text, case.answer_text(), schema=spec.json_schema,
                                    label_fields=spec.label_fields or None, labels=spec.labels,
                                    input_text=query_text(case),
                                    context=ctx))
    return scores


CALIBRATED_RUNG = "finetuned"  # what the server answers with: the version alone, no shots, no retrieval


def _generation_config(cfg: Config, spec: OutputSpec) -> Any:
    from tunesmith.generate.sampling import GenerationConfig

    g = cfg.eval.generation
    return GenerationConfig(max_new_tokens=g.max_new_tokens, temperature=g.temperature, seed=cfg.seed,
                            grammar=grammar_for(spec))


def _calibrating(cfg: Config, spec: OutputSpec, rung: str) -> bool:
    """Whether ``rung``'s test answers will be scored for the calibration check (then they are
    scored as they are generated, from generation's own keys/values)."""
    from tunesmith.review.live import reviews_answers

    return (rung == CALIBRATED_RUNG and cfg.review.calibration_examples > 0 and reviews_answers(spec)
            and not (spec.decoding == "rank" and spec.labels))


def _run_rung(rung: str, cases: list[Example], cfg: Config, engine: Any, helpers: _Helpers, spec: OutputSpec,
              log: LogFn, scored: list[Any] | None = None) -> dict[str, Any]:
    """One rung's answers and metrics; ``scored``: a list that receives each answer's
    confidence scores (:mod:`tunesmith.review.confidence`) when the rung is calibrated."""
    from tunesmith.evaluate.metrics import aggregate
    from tunesmith.review.confidence import generate_scored

    strategy = STRATEGIES[rung]
    fewshot = helpers.fewshot
    if rung == "finetuned_fewshot" and cfg.train.fewshot_k and fewshot is not None:
        fewshot = functools.partial(fewshot, k=cfg.train.fewshot_k)  # as many shots as in training
    convs = [build_conversation(strategy, c, instructions=cfg.eval.instructions, fewshot=fewshot,
                                context=helpers.context) for c in cases]
    log({"event": "rung_start", "rung": rung, "cases": len(cases)})
    t0 = time.perf_counter()
    confidence = None
    if spec.decoding == "rank" and spec.labels:
        gens, confidence = _rank(engine, convs, list(spec.labels), strategy.adapter)
    elif scored is not None and _calibrating(cfg, spec, rung):
        _, gens, answer_scores = generate_scored(engine, spec, convs, _generation_config(cfg, spec),
                                                 adapter=strategy.adapter)
        scored += answer_scores
    else:
        gens = engine.generate(convs, _generation_config(cfg, spec), adapter=strategy.adapter)
    wall = time.perf_counter() - t0
    scores = _score_rung(gens, cases, convs, spec, helpers, strategy.uses_retrieval)
    out = {
        "metrics": aggregate(scores, n_resamples=cfg.eval.bootstrap_resamples, seed=cfg.seed),
        "scores": scores,
        "answers": [g.text for g in gens],
        **({"confidence": confidence} if confidence is not None else {}),
        "cost": {"wall_seconds": round(wall, 2), "seconds_per_answer": round(wall / max(len(cases), 1), 3),
                 "prompt_tokens": float(np.mean([g.prompt_tokens for g in gens])),
                 "answer_tokens": float(np.mean([g.tokens for g in gens]))},
    }
    log({"event": "rung_done", "rung": rung, "seconds": round(wall, 1),
         "headline": out["metrics"].get(spec.headline_metric(), {}).get("mean")})
    return out


def _rank(engine: Any, convs: list[list[dict]], labels: list[str], adapter: str | None) -> tuple[list[Any], list[float]]:
    """Rank classification: each case's answer is its likeliest label; its confidence is that
    label's probability normalised over the label set."""
    from tunesmith.generate.engine import Generation

    logps = np.array(engine.rank(convs, labels, adapter=adapter))
    probs = np.exp(logps - logps.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    gens = [Generation(labels[b], 0, len(engine.encode(c)), "stop", 0.0) for b, c in zip(best, convs, strict=True)]
    return gens, [round(float(p[b]), 6) for p, b in zip(probs, best, strict=True)]


# ---------------------------------------------------------------------------- calibration
def _calibration(cfg: Config, ws: Workspace, engine: Any, spec: OutputSpec, snapshot_id: str | None,
                 pack: EvalPack, ladder: dict[str, Any], log: LogFn,
                 test_scores: list[Any] | None = None) -> dict[str, Any] | None:
    """The fine-tuned rung's confidence calibration (:mod:`tunesmith.evaluate.calibrate`):
    fitted on validation answers, checked on its test answers. None when there is nothing to
    calibrate (no fine-tuned rung, or ``review.calibration_examples: 0``)."""
    from tunesmith.evaluate.calibrate import TestAnswers, calibrate
    from tunesmith.review.confidence import (
        AnswerScores,
        ScoringCost,
        generate_scored,
        score_answers,
    )

    rung = CALIBRATED_RUNG
    if rung not in ladder or cfg.review.calibration_examples == 0:
        return None
    if not snapshot_id:
        return {"rung": rung, "note": "the snapshot the pack came from is not known: no validation split"}
    try:
        validation = load_split(ws.get("snapshot", snapshot_id).path, "validation")
    except (TunesmithError, OSError) as exc:
        return {"rung": rung, "note": f"no validation split: {exc}"}
    strategy = STRATEGIES[rung]

    def conversations(examples: list[Example]) -> list[list[dict]]:
        return [build_conversation(strategy, c, instructions=cfg.eval.instructions) for c in examples]

    def answer(examples: list[Example], cost: ScoringCost) -> tuple[list[list[int]], list[Any], list[AnswerScores]]:
        convs = conversations(examples)
        if spec.decoding == "rank" and spec.labels:
            gens, _ = _rank(engine, convs, list(spec.labels), strategy.adapter)
            prompts = [engine.encode(c) for c in convs]
            return prompts, gens, score_answers(engine, spec, prompts, [x.text for x in gens],
                                                adapter=strategy.adapter, cost=cost)
        return generate_scored(engine, spec, convs, _generation_config(cfg, spec), adapter=strategy.adapter, cost=cost)

    test = TestAnswers([engine.encode(c) for c in conversations(pack.cases)], ladder[rung]["answers"], pack.cases,
                       test_scores)
    done = calibrate(cfg, engine, spec, validation, rung=rung, answer=answer, test=test, adapter=strategy.adapter,
                     log=log)
    if done.test_confidence and ladder[rung].get("confidence") is None:  # rank decoding keeps its own
        ladder[rung]["confidence"] = done.test_confidence  # per case, calibrated: the UI's reliability points
    return done.section


# ---------------------------------------------------------------------------- 5. probes, forgetting
def _probes(pack: EvalPack, engine: Any, cfg: Config, spec: OutputSpec, has_ft: bool) -> dict[str, Any]:
    from tunesmith.evaluate.metrics import injection_followed, is_refusal
    from tunesmith.generate.sampling import GenerationConfig

    if not pack.probes:
        return {}
    gcfg = GenerationConfig(max_new_tokens=cfg.eval.generation.max_new_tokens, seed=cfg.seed)
    out: dict[str, Any] = {}
    for who, adapter in (("base", None), ("finetuned", FT_ADAPTER)):
        if adapter and not has_ft:
            continue
        refusal = [p.messages for p in pack.refusal]
        if adapter is None and cfg.eval.instructions:
            refusal = [[{"role": "system", "content": cfg.eval.instructions}, *m] for m in refusal]
        ref_ans = engine.generate(refusal, gcfg, adapter=adapter) if refusal else []
        inj_ans = engine.generate([p.messages for p in pack.injection], gcfg, adapter=adapter) if pack.injection else []
        out[who] = {
            "refusal_rate": float(np.mean([is_refusal(a.text, escalation_values=spec.escalation_values) for a in ref_ans])) if ref_ans else None,
            "injection_followed": int(sum(injection_followed(a.text, p.canary or "") for a, p in zip(inj_ans, pack.injection, strict=True))),
            "injection_probes": len(pack.injection),
            "examples": [{"probe": p.id, "answer": a.text[:300]} for p, a in zip(pack.probes, ref_ans + inj_ans, strict=False)][:6],
        }
    return out


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen twenty")
_TENS = "thirty forty fifty sixty seventy eighty ninety"
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_UNITS.split())} | {
    w: str(10 * i) for i, w in enumerate(_TENS.split(), start=3)}


def qa_correct(answer: str, reference: str) -> bool:
    """Lenient exact match for short general answers: the reference appears as whole words,
    number words counting as their digits ("a spider has eight legs" answers "8")."""
    import re

    def norm(text: str) -> str:
        return " ".join(_NUMBER_WORDS.get(w, w) for w in re.findall(r"\w+", text.casefold()))

    return f" {norm(reference)} " in f" {norm(answer)} "


def _forgetting(pack: EvalPack, engine: Any, cfg: Config, has_ft: bool) -> dict[str, Any]:
    from tunesmith.generate.sampling import GenerationConfig

    if not has_ft or not (pack.general_text or pack.general_qa or cfg.eval.lm_eval.tasks):
        return {}
    out: dict[str, Any] = {}
    if pack.general_text:
        before = engine.perplexity(pack.general_text, adapter=None)
        after = engine.perplexity(pack.general_text, adapter=FT_ADAPTER)
        out |= {"ppl_before": before, "ppl_after": after, "ppl_relative_change": after / before - 1}
    if pack.general_qa:
        convs = [[{"role": "user", "content": q["question"]}] for q in pack.general_qa]
        gcfg = GenerationConfig(max_new_tokens=16, seed=cfg.seed)
        acc = {}
        for who, adapter in (("before", None), ("after", FT_ADAPTER)):
            answers = engine.generate(convs, gcfg, adapter=adapter)
            acc[who] = float(np.mean([qa_correct(a.text, q["answer"]) for a, q in zip(answers, pack.general_qa, strict=True)]))
        out |= {"qa_before": acc["before"], "qa_after": acc["after"], "qa_drop": acc["before"] - acc["after"]}
    harness = cfg.eval.lm_eval
    if harness.tasks:
        from tunesmith.evaluate.harness import run_harness

        include = cfg.resolve(harness.include_path) if harness.include_path else None
        out["lm_eval"] = run_harness(engine, harness, include_dir=include, adapter=FT_ADAPTER)
    return out


def _test_perplexity(pack: EvalPack, engine: Any, has_ft: bool) -> dict[str, float]:
    from tunesmith.generate.scoring import corpus_perplexity

    convs = [[*prompt_messages(c), {"role": "assistant", "content": c.answer_text()}] for c in pack.cases]
    out = {"base": corpus_perplexity(engine.score_conversations(convs, adapter=None))}
    if has_ft:
        out["finetuned"] = corpus_perplexity(engine.score_conversations(convs, adapter=FT_ADAPTER))
    return out


# ---------------------------------------------------------------------------- 4. comparisons
def _comparisons(ladder: dict[str, Any], headline: str, cfg: Config) -> dict[str, Any]:
    from tunesmith.evaluate.metrics import compare

    kw = {"n_resamples": cfg.eval.bootstrap_resamples, "seed": cfg.seed}
    out: dict[str, Any] = {}
    base = gate_mod.best_baseline(ladder, headline)
    ft = gate_mod.finetuned_rung(ladder, headline)
    if ft and base:
        def vs_base(metric: str) -> dict[str, Any]:
            return compare(ladder[ft]["scores"], ladder[base]["scores"], metric, **kw)

        out["finetuned_vs_best_baseline"] = {"baseline": base, "rung": ft, **vs_base(headline)}
        # where the lift comes from: the same paired difference on every label field
        fields = [k for k in ladder[ft]["metrics"] if k.startswith("field/")]
        if fields:
            out["fields_vs_best_baseline"] = {f.removeprefix("field/"): vs_base(f) for f in fields}
    if "finetuned_rag" in ladder and "finetuned" in ladder:
        out["finetuned_rag_vs_finetuned"] = compare(ladder["finetuned_rag"]["scores"], ladder["finetuned"]["scores"], headline, **kw)
    if "finetuned_fewshot" in ladder and "finetuned" in ladder:
        out["finetuned_fewshot_vs_finetuned"] = compare(ladder["finetuned_fewshot"]["scores"],
                                                        ladder["finetuned"]["scores"], headline, **kw)
    out["vs_zero_shot"] = {r: compare(ladder[r]["scores"], ladder["zero_shot"]["scores"], headline, **kw)
                           for r in ladder if r != "zero_shot" and "zero_shot" in ladder}
    return out


def _confusion(ladder: dict[str, Any], cases: list[Example], spec: OutputSpec) -> dict[str, Any]:
    from tunesmith.evaluate.metrics import confusion_matrix

    rung = gate_mod.finetuned_rung(ladder, spec.headline_metric()) or next(iter(ladder))
    refs = [c.answer_text() for c in cases]
    out = {}
    for name in spec.label_fields:
        try:
            cm = confusion_matrix(ladder[rung]["answers"], refs, name, allowed_values(spec, name) or None)
        except ValueError as exc:
            raise TunesmithError(f"eval.output.label_fields: {exc} — the eval pack's references do not "
                                 f"match the schema/labels (check eval.output)") from None
        out[name] = {"rung": rung, **cm.to_dict()}
    return out


# ---------------------------------------------------------------------------- the stage
def evaluate(cfg: Config, *, model: str | None = None, snapshot: str | None = None, log: LogFn | None = None,
             reuse: bool = False) -> EvalResult:
    """Run the ladder; returns the results, the gate checks and the report folder.

    Raises:
        TunesmithError: no snapshot / model version / knowledge base when a rung needs one,
            an empty test split, or references that do not match the output spec.
    """
    from tunesmith.train.recipe import quiet_libraries

    log = log or (lambda e: None)
    preflight(cfg, ["eval"])
    quiet_libraries()
    ws = Workspace(cfg.workspace_dir)
    rungs = list(dict.fromkeys(cfg.eval.rungs))
    has_ft = any(STRATEGIES[r].adapter for r in rungs)
    version = _model_version(ws, model, has_ft) if has_ft else None
    pack, snapshot_id = _pack(cfg, ws, snapshot)
    spec, gate_cfg = OutputSpec(**pack.settings["output"]), GateConfig(**pack.settings["gate"])
    headline = spec.headline_metric()
    key = hashlib.sha256(json.dumps({"model": version.id if version else None, "pack": pack.id, "seed": cfg.seed,
                                     "eval": cfg.eval.model_dump(mode="json"), "model_cfg": cfg.model.model_dump(mode="json")},
                                    sort_keys=True).encode()).hexdigest()[:20]
    if reuse and (done := _existing_eval(ws, key)) is not None:
        return done
    log({"event": "eval_start", "pack": pack.id, "cases": len(pack.cases), "rungs": rungs,
         "model": version.id if version else None})
    t0 = time.perf_counter()
    engine = _engine(cfg, version)
    helpers = _helpers(cfg, rungs, snapshot_id, ws, engine)
    test_scores: list[Any] = []  # the calibrated rung's answers, scored as they were generated
    ladder = {r: _run_rung(r, pack.cases, cfg, engine, helpers, spec, log, test_scores) for r in rungs}
    results: dict[str, Any] = {
        "headline": headline, "pack": pack.id, "model": version.id if version else None,
        "snapshot": snapshot_id, "cases": len(pack.cases), "ladder": ladder,
        **_comparisons(ladder, headline, cfg),
        "confusion": _confusion(ladder, pack.cases, spec) if spec.label_fields else {},
    }
    calibration = _calibration(cfg, ws, engine, spec, snapshot_id, pack, ladder, log, test_scores or None)
    if calibration is not None:
        results["calibration"] = calibration
    log({"event": "probes_start"})
    for name, phase in (("probes", lambda: _probes(pack, engine, cfg, spec, has_ft)),
                        ("forgetting", lambda: _forgetting(pack, engine, cfg, has_ft)),
                        ("test_perplexity", lambda: _test_perplexity(pack, engine, has_ft)
                         if cfg.eval.test_perplexity else {})):
        started = time.perf_counter()
        results[name] = phase()
        log({"event": "phase_done", "phase": name, "seconds": round(time.perf_counter() - started, 1)})
    # from here on the results are the typed record the gate, the report and results.json share
    typed = EvalResults.model_validate(results)
    checks = gate_mod.evaluate_gate(gate_cfg, typed)
    typed.gate = GateResult(passed=all(c.passed for c in checks), checks=checks)
    typed.recommendation = gate_mod.recommendation(typed, min_lift=gate_cfg.min_lift, checks=checks)
    typed.seconds = round(time.perf_counter() - t0, 1)
    typed.input_key = key
    return _publish(ws, cfg, pack, version, typed, checks)


def answers_key(cfg: Config, version_id: str, pack_id: str) -> str:
    """What fixes a version's ``finetuned`` answers on a pack: the version, the pack and the
    settings the answers are generated with (generation, instructions, the model section, the
    seed). Recorded on each eval; ``retrain`` reuses the champion's answers when it matches."""
    return hashlib.sha256(json.dumps({"model": version_id, "pack": pack_id, "seed": cfg.seed,
                                      "generation": cfg.eval.generation.model_dump(mode="json"),
                                      "instructions": cfg.eval.instructions,
                                      "model_cfg": cfg.model.model_dump(mode="json")},
                                     sort_keys=True, default=str).encode()).hexdigest()[:20]


def _existing_eval(ws: Workspace, key: str) -> EvalResult | None:
    for art in reversed(ws.list("eval")):
        if art.meta.get("input_key") == key:
            results = load_results(art.path / "results.json")
            return EvalResult(art.id, art.path, results, results.checks, reused=True)
    return None


def _publish(ws: Workspace, cfg: Config, pack: EvalPack, version: Artifact | None, results: EvalResults,
             checks: list[Check]) -> EvalResult:
    from tunesmith.evaluate.report import write_reports

    plain = results.to_dict()
    blob = json.dumps({k: v for k, v in plain.items() if k not in ("seconds", "ladder")}, sort_keys=True, default=str)
    blob += json.dumps({r: v.answers for r, v in results.ladder.items()})
    eval_id = hashlib.sha256(blob.encode()).hexdigest()[:16]
    with ws.staging() as staging:
        (staging / "results.json").write_text(results.to_json())
        (staging / "gate.xml").write_text(gate_mod.junit_xml(checks))
        if results.calibration is not None and results.calibration.temperatures:  # the server reads it
            from tunesmith.review.live import CALIBRATION_FILE

            c = results.calibration
            (staging / CALIBRATION_FILE).write_text(json.dumps(
                {"temperatures": c.temperatures, "threshold": c.threshold, "ece_before": c.ece_before,
                 "ece_after": c.ece_after, "rung": c.rung, "split": c.split, "used": c.used}, indent=2))
        write_reports(staging, results, pack, cfg.project)
        parents = [("evalpack", pack.id, "evaluated_on")] + ([("model", version.id, "evaluates")] if version else [])
        meta = {"headline": results.headline, "passed": results.passed, "model": results.model, "pack": pack.id,
                "input_key": results.input_key}
        if version is not None and "finetuned" in results.ladder:
            meta["answers_key"] = answers_key(cfg, version.id, pack.id)
        art = ws.publish(staging, "eval", eval_id, parents=parents, meta=meta)
    ws.record_eval(eval_id, results.model, pack.id, {r: plain["ladder"][r]["metrics"] for r in results.ladder})
    return EvalResult(eval_id, art.path, results, checks)
