"""``retrain``: the champion's successor from the reviewed corrections, compared on equal terms.

    1. what it starts from   the champion (alias), the frozen eval pack (``eval.pack``, else the
                             pack of the champion's gate eval), the latest corrections export,
                             the monitor's alarms since the champion took office (reported)
    2. data                  a new snapshot through ``prepare``, the mix with rehearsal
                             (mix.py), the new-slice pack from the held-out corrections
    3. train                 from the base, or continuing the champion's adapter; the version's
                             lineage names its parent and the retrain
    4. compare               champion vs challenger, paired, on both packs (compare.py); the gate
                             (gate.py); each comparison published as an eval of the challenger
                             (so the registry's promote reads this gate)
    5. register              alias ``challenger`` (gated promote), ``--rollout`` records the
                             rollout setting the server picks up (serve/rollout_admin.set_rollout)
    6. the record            a ``retrain`` artifact (retrain.json) with everything above, and the
                             run in the workspace's runs table
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import Config, GateConfig
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.pack import PACK_KIND, EvalPack, load_pack
from tunesmith.evaluate.results import Check, EvalResults, GateResult
from tunesmith.retrain.compare import PackComparison
from tunesmith.retrain.corrections import Corrections
from tunesmith.retrain.mix import DataMix
from tunesmith.review.answers import input_hash
from tunesmith.workspace import Artifact, Workspace

LogFn = Callable[[dict[str, Any]], None]
CHAMPION_ALIAS = "champion"
KIND = "retrain"


@dataclass
class Trigger:
    """A monitor alarm recorded since the champion took office."""

    seq: int | None
    time: float | None
    kind: str
    checks: list[str]
    window: str


@dataclass
class RetrainResult:
    champion: str
    challenger: str | None
    start: str
    frozen_pack: str
    new_slice_pack: str
    corrections: Corrections
    mix: DataMix
    frozen: PackComparison
    new_slice: PackComparison
    checks: list[Check]
    triggers: list[Trigger] = field(default_factory=list)
    registered: bool = False
    registration: str = ""  # what happened to the challenger alias, in words
    rollout: dict[str, Any] | None = None
    evals: dict[str, str] = field(default_factory=dict)  # frozen|new_slice -> eval id
    retrain_id: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"retrain": self.retrain_id, "champion": self.champion, "challenger": self.challenger,
                "start": self.start, "passed": self.passed, "registered": self.registered,
                "registration": self.registration, "rollout": self.rollout,
                "triggers": [t.__dict__ for t in self.triggers],
                "corrections": self.corrections.to_dict(), "data": self.mix.to_dict(),
                "packs": {"frozen": self.frozen_pack, "new_slice": self.new_slice_pack},
                "frozen": self.frozen.to_dict(), "new_slice": self.new_slice.to_dict(),
                "gate": {"passed": self.passed, "checks": [c.to_dict() for c in self.checks]},
                "evals": self.evals, "seconds": self.seconds, "notes": self.notes}


# ---------------------------------------------------------------------------- 1. inputs
def champion_version(ws: Workspace, cfg: Config) -> Artifact:
    from tunesmith.registry import ModelRegistry

    aliases = ModelRegistry.from_config(cfg).aliases()
    if CHAMPION_ALIAS not in aliases:
        versions = ws.list("model")
        hint = (f"promote one first: `tunesmith promote {versions[-1].id[:12]}`" if versions
                else "train and promote one first (`tunesmith run`, then `tunesmith promote ID`)")
        raise TunesmithError(f"no champion in {ws.root}: retrain compares a challenger with the champion; {hint}")
    return ws.get("model", aliases[CHAMPION_ALIAS])


def frozen_pack(ws: Workspace, cfg: Config, champion: Artifact) -> tuple[EvalPack, str]:
    """``eval.pack`` when pinned, else the pack of the champion's latest eval; (pack, where from)."""
    from tunesmith.registry.versions import gate_eval

    if cfg.eval.pack:
        return load_pack(ws, cfg.eval.pack), "eval.pack"
    chosen = gate_eval(ws, champion.id, None)
    pack_id = chosen.meta.get("pack") if chosen else None
    if not pack_id:
        raise TunesmithError(f"no frozen eval pack: eval.pack is not set and the champion {champion.id[:12]} has no "
                             f"eval; run `tunesmith eval --model {champion.id[:12]}` and pin its pack (eval.pack)")
    return load_pack(ws, pack_id), f"the champion's eval {chosen.id}"  # type: ignore[union-attr]


def triggers_since(ws: Workspace, champion: Artifact) -> list[Trigger]:
    """Alarms recorded since the champion alias last moved to this version (or since it was
    trained, for a champion set before the ledger existed), oldest first."""
    from tunesmith.monitor import alarms
    from tunesmith.registry.ledger import AliasLedger

    moves = [m for m in AliasLedger(ws).moves(alias=CHAMPION_ALIAS) if m.to_model == champion.id]
    since = moves[-1].at if moves else champion.created
    found = [a for a in alarms.history(ws.db_path, limit=1000) if (a.time or 0) >= since]
    return [Trigger(a.seq, a.time, a.kind, list(a.checks), a.window) for a in reversed(found)]


# ---------------------------------------------------------------------------- 2. data
def _derived_config(cfg: Config, sources: list[Any], pack_id: str) -> Config:
    new = cfg.model_copy(deep=True)
    new.data.sources = sources
    new.eval.pack = pack_id
    new._base_dir = cfg.base_dir
    return new


def new_slice_pack(ws: Workspace, frozen: EvalPack, mix: DataMix, corrections: Corrections) -> EvalPack:
    """The held-out corrections as an eval pack with the frozen pack's output and gate settings
    (so both packs are scored alike); no probes (the frozen pack has them)."""
    from tunesmith.config import OutputSpec
    from tunesmith.data.arrow import dumps
    from tunesmith.evaluate.outputs import check_headline

    cases = [ex for ex in mix.new_slice if ex.is_chat and ex.answer_text()]
    if not cases:
        raise TunesmithError(
            f"no held-out corrections: of the {corrections.records} exported records none fell into the new slice "
            f"(retrain.new_slice_share) and survived prepare; review more answers and export again, or raise "
            f"retrain.new_slice_share")
    check_headline(OutputSpec(**frozen.settings["output"]), cases)
    content = {"cases": [ex.to_dict() for ex in cases], "probes": [], "general_qa": [], "general_text": [],
               "settings": frozen.settings}
    pack_id = hashlib.sha256(dumps(content).encode()).hexdigest()[:16]
    if not ws.artifact_dir(PACK_KIND, pack_id).exists():
        parents = [("snapshot", mix.snapshot, "test_cases_from"), ("evalpack", frozen.id, "settings_from")]
        if corrections.export_id:
            parents.append(("reviewset", corrections.export_id, "held_out_from"))
        with ws.staging() as staging:
            (staging / "pack.json").write_text(json.dumps(content, indent=1, ensure_ascii=False))
            ws.publish(staging, PACK_KIND, pack_id, parents=parents,
                       meta={"cases": len(cases), "probes": 0, "snapshot": mix.snapshot, "kind": "new_slice",
                             "corrections": corrections.export_id})
    return load_pack(ws, pack_id)


def prepare_data(cfg: Config, ws: Workspace, *, frozen: EvalPack, previous: str,
                 add: list[Path]) -> tuple[Corrections, DataMix, Config]:
    """The corrections tagged, the new snapshot prepared, the mix published; and the config the
    rest of the retrain runs with (the new sources, the frozen pack pinned)."""
    from tunesmith.data.pipeline import prepare
    from tunesmith.retrain import corrections, mix

    frozen_hashes = frozenset(input_hash(c.messages) for c in frozen.cases)
    work = ws.root / "retrain"
    work.mkdir(parents=True, exist_ok=True)
    fixes = corrections.tag_corrections(cfg, ws, frozen_hashes, work)
    sources, replaced = mix.retrain_sources(cfg, fixes, add)
    new_cfg = _derived_config(cfg, sources, frozen.id)
    prepared = prepare(new_cfg)
    data = mix.build_mix(new_cfg, ws, snapshot=prepared.snapshot_id, snapshot_dir=prepared.path,  # type: ignore[arg-type]
                         previous=previous, frozen_hashes=frozen_hashes, corrections=fixes, replaced=replaced)
    return fixes, data, new_cfg


# ---------------------------------------------------------------------------- 4. publish the comparisons
def comparison_key(key: str, pack_id: str, checks: list[Check] | None = None) -> str:
    """The input key of one published comparison: the versions, packs and settings (``key``)
    and the pack; with ``checks``, the gate too (another margin is another verdict, same answers)."""
    gate = [c.to_dict() for c in checks] if checks is not None else None
    return hashlib.sha256(json.dumps({"retrain": key, "pack": pack_id, "gate": gate}, sort_keys=True,
                                     default=str).encode()).hexdigest()[:20]


def _existing_comparison(ws: Workspace, key: str, pack: EvalPack) -> PackComparison | None:
    """A comparison published for the same versions, packs and settings (the answers and their
    scores do not change; the gate is computed again from them)."""
    from tunesmith.config import OutputSpec
    from tunesmith.evaluate.results import load_results
    from tunesmith.retrain.compare import field_metrics

    for art in reversed(ws.list("eval")):
        if art.meta.get("kind") == "retrain" and art.meta.get("comparison_key") == comparison_key(key, pack.id):
            r = load_results(art.path)
            if r.lead is None or "champion" not in r.ladder or "finetuned" not in r.ladder:
                return None
            spec = OutputSpec(**pack.settings["output"])
            kind = (r.model_extra or {}).get("retrain", {}).get("pack_kind", "frozen")
            return PackComparison(pack.id, kind, r.cases or 0, r.headline, r.ladder["champion"], r.ladder["finetuned"],
                                  r.lead, dict(r.fields_vs_best_baseline), field_metrics(spec))
    return None


def _publish_eval(ws: Workspace, cmp: PackComparison, pack: EvalPack, project: str, challenger: str, champion: str,
                  checks: list[Check], extra: dict[str, Any]) -> str:
    """The comparison as an eval of the challenger on ``cmp.pack``: the ladder holds both
    versions (``champion`` and ``finetuned``), the lead is challenger − champion, the gate is the
    retrain gate. The registry reads it like any eval (promote, models show)."""
    from tunesmith.evaluate.gate import junit_xml
    from tunesmith.evaluate.report import write_reports

    passed = all(c.passed for c in checks)
    results = EvalResults.model_validate({
        "headline": cmp.headline, "pack": cmp.pack, "model": challenger, "snapshot": extra.get("snapshot"),
        "cases": cmp.cases, "ladder": {"champion": cmp.champion.to_dict(), "finetuned": cmp.challenger.to_dict()},
        "finetuned_vs_best_baseline": cmp.diff.to_dict(),
        "fields_vs_best_baseline": {f: c.to_dict() for f, c in cmp.fields.items()},
        "gate": GateResult(passed=passed, checks=checks).to_dict(),
        "recommendation": ("Promote the challenger: it beats the champion on the new slice and keeps every field "
                           "of the frozen pack." if passed else
                           "Keep the champion: " + "; ".join(c.name for c in checks if not c.passed) + " failed."),
        "retrain": {"champion": champion, "pack_kind": cmp.kind, **extra},
    })
    results.input_key = comparison_key(extra["retrain_key"], cmp.pack, checks)
    text = results.to_json()
    eval_id = hashlib.sha256(text.encode()).hexdigest()[:16]
    if not ws.artifact_dir("eval", eval_id).exists():
        with ws.staging() as staging:
            (staging / "results.json").write_text(text)
            (staging / "gate.xml").write_text(junit_xml(checks, suite="tunesmith-retrain-gate"))
            write_reports(staging, results, pack, f"{project}: retrain ({cmp.kind} pack)")
            ws.publish(staging, "eval", eval_id,
                       parents=[("evalpack", cmp.pack, "evaluated_on"), ("model", challenger, "evaluates"),
                                ("model", champion, "compared_with")],
                       meta={"headline": cmp.headline, "passed": passed, "model": challenger, "pack": cmp.pack,
                             "input_key": results.input_key, "kind": "retrain", "champion": champion,
                             "comparison_key": comparison_key(extra["retrain_key"], cmp.pack)})
        ws.record_eval(eval_id, challenger, cmp.pack,
                       {r: {k: v.to_dict() for k, v in rung.metrics.items()}
                        for r, rung in (("champion", cmp.champion), ("finetuned", cmp.challenger))})
    return eval_id


# ---------------------------------------------------------------------------- the stage
def retrain(cfg: Config, *, add: list[Path] | None = None, start: str | None = None, rollout: str | None = None,
            by: str | None = None, log: LogFn | None = None, train_log: LogFn | None = None) -> RetrainResult:
    """Run the whole retrain (see the module docstring).

    Raises:
        TunesmithError: no champion, no frozen pack, no corrections export, nothing new to train
            on, no held-out corrections, or an adapter that cannot start the run.
    """
    from tunesmith.deps import preflight

    log = log or (lambda e: None)
    start = start or cfg.retrain.start
    if start not in ("base", "champion"):
        raise TunesmithError(f"--start must be base or champion, not {start!r}")
    if rollout not in (None, "shadow", "canary"):
        raise TunesmithError(f"--rollout must be shadow or canary, not {rollout!r}")
    preflight(cfg, ["prepare", "train", "eval"])
    ws = Workspace(cfg.workspace_dir)
    run_id = ws.start_run("retrain", cfg.hash())
    try:
        result = _retrain(cfg, ws, add or [], start, rollout, by, log, train_log)
    except BaseException as exc:
        ws.finish_run(run_id, "failed", {"error": str(exc)[:2000]})
        raise
    ws.finish_run(run_id, "ok", {"retrain": result.retrain_id, "challenger": result.challenger,
                                 "passed": result.passed})
    return result


def _retrain(cfg: Config, ws: Workspace, add: list[Path], start: str, rollout: str | None, by: str | None,
             log: LogFn, train_log: LogFn | None) -> RetrainResult:
    from tunesmith.retrain import compare, gate
    from tunesmith.train.recipe import train

    seconds: dict[str, float] = {}
    notes: list[str] = []
    # 1. what it starts from (every check before any work)
    champion = champion_version(ws, cfg)
    champ_record = json.loads((champion.path / "model_version.json").read_text())
    continues = {"adapter": "lora/dora", "model": "full"}.get(champ_record.get("weights") or "")
    if start == "champion" and (continues is None or (continues == "full") != (cfg.train.method == "full")):
        raise TunesmithError(f"retrain.start: champion continues the champion's weights with the same kind of method, "
                             f"but {champion.id[:12]} was trained with method '{champ_record.get('method')}' and this "
                             f"run uses '{cfg.train.method}'; use retrain.start: base")
    previous = champ_record.get("snapshot")
    if not previous or not ws.artifact_dir("snapshot", previous).exists():
        raise TunesmithError(f"the champion's training snapshot {previous} is not in {ws.root}: rehearsal needs it")
    frozen, frozen_from = frozen_pack(ws, cfg, champion)
    if not cfg.eval.pack:
        notes.append(f"eval.pack is not pinned; the frozen pack is {frozen.id} ({frozen_from}): pin it "
                     f"(eval.pack: {frozen.id}) so every later eval uses it")
    triggers = triggers_since(ws, champion)
    log({"event": "retrain_start", "champion": champion.id, "frozen_pack": frozen.id,
         "triggers": [t.kind for t in triggers]})
    # 2. data
    t0 = time.perf_counter()
    fixes, data, new_cfg = prepare_data(cfg, ws, frozen=frozen, previous=previous, add=add)
    if fixes.overlap_frozen:
        notes.append(f"{len(fixes.overlap_frozen)} exported record(s) have the input of a frozen-pack case and were "
                     "left out (neither trained on nor held out)")
    slice_pack = new_slice_pack(ws, frozen, data, fixes)
    seconds["data"] = round(time.perf_counter() - t0, 1)
    log({"event": "data_ready", **data.to_dict(), "new_slice_pack": slice_pack.id})
    # 3. train
    t0 = time.perf_counter()
    lineage = {"parent": champion.id, "start": start, "retrain_mix": data.mix_snapshot,
               "corrections": fixes.export_id}
    trained = train(new_cfg, snapshot=data.mix_snapshot, log=train_log,
                    init_adapter=champion.path if start == "champion" else None, lineage_extra=lineage)
    if trained.interrupted or not trained.model_id:
        raise TunesmithError("training was interrupted; run `tunesmith retrain` again (the data steps are reused)")
    seconds["train"] = round(time.perf_counter() - t0, 1)
    challenger = ws.get("model", trained.model_id)
    # 4. compare + gate (the same versions, packs and settings: the published comparisons are reused)
    t0 = time.perf_counter()
    rc = cfg.retrain
    key = hashlib.sha256(json.dumps({"challenger": challenger.id, "champion": champion.id, "frozen": frozen.id,
                                     "slice": slice_pack.id, "eval": new_cfg.eval.model_dump(mode="json"),
                                     "model": new_cfg.model.model_dump(mode="json"), "seed": cfg.seed},
                                    sort_keys=True).encode()).hexdigest()[:20]
    done = {kind: _existing_comparison(ws, key, pack) for kind, pack in (("frozen", frozen),
                                                                         ("new_slice", slice_pack))}
    if done["frozen"] and done["new_slice"]:
        frozen_cmp, slice_cmp = done["frozen"], done["new_slice"]
        log({"event": "compare_reused", "key": key})
    else:
        engine = compare.load_engine(new_cfg, champion, challenger)
        # the champion's frozen-pack answers from its own eval (same pack and answer settings), if any
        stored = compare.stored_answers(ws, new_cfg, champion.id, frozen)
        if stored:
            notes.append(f"the champion's {len(frozen.cases)} frozen-pack answers are its eval {stored[1]}'s "
                         "(same pack and answer settings), not generated again")
        frozen_cmp = compare.compare_on(engine, new_cfg, frozen, "frozen", log,
                                        known={compare.CHAMPION: stored[0]} if stored else None)
        slice_cmp = compare.compare_on(engine, new_cfg, slice_pack, "new_slice", log)
        del engine
    gate_cfg = GateConfig(**frozen.settings["gate"])
    checks = gate.retrain_checks(
        frozen_fields=frozen_cmp.fields, new_slice=slice_cmp.diff, metric=slice_cmp.headline,
        margin=rc.max_field_drop, min_lift=rc.min_new_slice_lift, require_significant=gate_cfg.require_significant,
        json_valid=frozen_cmp.challenger.mean("json_valid"), min_json_validity=gate_cfg.min_json_validity)
    seconds["compare"] = round(time.perf_counter() - t0, 1)
    result = RetrainResult(champion.id, challenger.id, start, frozen.id, slice_pack.id, fixes, data, frozen_cmp,
                           slice_cmp, checks, triggers, seconds=seconds, notes=notes)
    extra = {"retrain_key": key, "snapshot": data.mix_snapshot, "new_slice_pack": slice_pack.id,
             "frozen_pack": frozen.id}
    # the new slice first: with no pinned pack, the registry reads the latest eval (the frozen one)
    result.evals["new_slice"] = _publish_eval(ws, slice_cmp, slice_pack, cfg.project, challenger.id, champion.id,
                                              checks, extra)
    result.evals["frozen"] = _publish_eval(ws, frozen_cmp, frozen, cfg.project, challenger.id, champion.id, checks,
                                           extra)
    # 5. register + rollout
    _register(cfg, ws, result, frozen.id, rollout, by)
    result.retrain_id = _record(ws, result)
    return result


def _register(cfg: Config, ws: Workspace, result: RetrainResult, frozen_pack_id: str, rollout: str | None,
              by: str | None) -> None:
    from tunesmith.registry import ModelRegistry

    alias = cfg.serve.rollout.challenger_alias
    registry = ModelRegistry.from_config(cfg)
    registry.pinned_pack = frozen_pack_id  # the gate is read from this retrain's frozen-pack eval
    challenger = result.challenger or ""
    if not result.passed:
        failed = ", ".join(c.name for c in result.checks if not c.passed)
        result.registration = (f"not registered as '{alias}': the retrain gate failed ({failed}); to register it anyway: "
                               f"`tunesmith promote {challenger[:12]} --alias {alias} --force --reason \"...\"`")
        if rollout:
            result.rollout = {"started": False, "mode": rollout, "why": "the gate failed; no rollout was started"}
        return
    change = registry.promote(challenger, alias, reason=f"tunesmith retrain (champion {result.champion[:12]})", by=by)
    result.registered = True
    if not change.changed:
        result.registration = f"'{alias}' already → {challenger[:12]}"
    else:
        result.registration = f"'{alias}' → {challenger[:12]}" + (f" (was {change.previous[:12]})" if change.previous
                                                                 else "")
    if rollout:
        result.rollout = _start_rollout(cfg, rollout, challenger, by)


def _start_rollout(cfg: Config, mode: str, challenger: str, by: str | None) -> dict[str, Any]:
    """The rollout setting running servers apply within a second (serve/rollout_admin.py): mode
    plus, for a canary, the configured share (a share of 0 would send nothing)."""
    from tunesmith.serve.rollout_admin import set_rollout

    r = cfg.serve.rollout
    share = r.share if mode == "canary" else None
    shadow_share = r.shadow_share if mode == "shadow" else None
    done = set_rollout(cfg, mode=mode, share=share, shadow_share=shadow_share,
                       reason=f"tunesmith retrain: challenger {challenger[:12]}", by=by)
    return {"started": True, "mode": mode, "settings": done["settings"], "event": done["event"]}


def _record(ws: Workspace, result: RetrainResult) -> str:
    """The retrain artifact: retrain.json (the --json summary) with lineage rows to what it read
    and what it made."""
    body = json.dumps(result.to_dict(), indent=1, sort_keys=True, default=str)
    retrain_id = hashlib.sha256(body.encode()).hexdigest()[:16]
    if ws.artifact_dir(KIND, retrain_id).exists():
        return retrain_id
    parents = [("model", result.champion, "champion"), ("snapshot", result.mix.mix_snapshot, "trained_on"),
               ("evalpack", result.frozen_pack, "frozen_pack"), ("evalpack", result.new_slice_pack, "new_slice")]
    if result.challenger:
        parents.append(("model", result.challenger, "challenger"))
    if result.corrections.export_id:
        parents.append(("reviewset", result.corrections.export_id, "corrections"))
    with ws.staging() as staging:
        (staging / "retrain.json").write_text(body)
        ws.publish(staging, KIND, retrain_id, parents=parents,
                   meta={"champion": result.champion, "challenger": result.challenger, "passed": result.passed,
                         "registered": result.registered, "triggers": [t.seq for t in result.triggers]})
    return retrain_id
