"""`tunesmith retrain` end to end on the tiny project: the challenger registered with its lineage
and the rollout recorded, a refused challenger kept but not registered, a start from the
champion's adapter, and the errors a user meets first."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from retrain.conftest import Project, build_project
from tunesmith.errors import TunesmithError
from tunesmith.workspace import Workspace

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Project:
    return build_project(tmp_path_factory.mktemp("retrain") / "p")


@pytest.fixture
def project(built, tmp_path) -> Project:
    """A fresh copy of the built project (each test moves aliases and writes artifacts)."""
    root = tmp_path / "p"
    shutil.copytree(built.root, root)
    return Project(root, built.champion, built.pack, built.snapshot)


def _json(res) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_retrain_registers_the_challenger_with_its_lineage_and_starts_the_rollout(project):
    from tunesmith.cli import app
    from tunesmith.monitor.alarms import Alarm, record
    from tunesmith.registry import ModelRegistry
    from tunesmith.registry.versions import gate_verdict
    from tunesmith.serve.rollout import RolloutEvents

    project.configure(max_field_drop=1.0)  # the field verdicts are tested on constructed results
    ws = Workspace(project.cfg.workspace_dir)
    alarm = record(ws.db_path, Alarm("quality", ["cusum"], "reviewed:1-300", None, None, 300, "p0=0.05", {}, {}))
    res = runner.invoke(app, ["retrain", "-c", str(project.root), "--rollout", "shadow", "--json", "--by", "ops"])
    assert res.exit_code == 0, res.output
    out = _json(res)
    challenger = out["challenger"]
    assert out["passed"] and out["registered"] and out["champion"] == project.champion != challenger
    assert [t["seq"] for t in out["triggers"]] == [alarm.seq] and out["triggers"][0]["kind"] == "quality"
    assert out["packs"]["frozen"] == project.pack
    assert out["new_slice"]["diff"]["diff"] > 0 and out["new_slice"]["cases"] == out["data"]["counts"]["new_slice"]
    assert out["corrections"]["overlap_frozen_pack"] == 0
    # registry: the challenger alias, gated on this retrain's eval of the frozen pack
    reg = ModelRegistry.from_config(project.cfg)
    assert reg.aliases() == {"champion": project.champion, "challenger": challenger}
    verdict = gate_verdict(ws, challenger, project.pack)
    assert verdict.passed and verdict.eval_id == out["evals"]["frozen"]
    assert reg.history("challenger")[-1].by == "ops"
    # lineage: the version names its parent, the mix it was trained on and how it started
    record_ = json.loads((ws.get("model", challenger).path / "model_version.json").read_text())
    assert record_["parent"] == project.champion and record_["start"] == "base"
    assert record_["snapshot"] == out["data"]["mix_snapshot"]
    assert ("model", project.champion, "retrained_from") in ws.parents("model", challenger)
    frozen_eval = ws.get("eval", out["evals"]["frozen"])
    assert frozen_eval.meta["model"] == challenger and frozen_eval.meta["pack"] == project.pack
    assert set(json.loads((frozen_eval.path / "results.json").read_text())["ladder"]) == {"champion", "finetuned"}
    assert "field:label" in (frozen_eval.path / "report.md").read_text()
    retrain_art = ws.get("retrain", out["retrain"])
    assert json.loads((retrain_art.path / "retrain.json").read_text())["challenger"] == challenger
    # the rollout setting the server polls
    assert out["rollout"]["started"] and out["rollout"]["mode"] == "shadow"
    event = RolloutEvents(ws.db_path).read(1)[0]
    assert event["event"] == "set" and event["canary"] == challenger
    assert event["reason"]["settings"]["mode"] == "shadow"


@pytest.mark.slow
def test_a_refused_challenger_is_kept_but_not_registered(project):
    from tunesmith.cli import app
    from tunesmith.registry import ModelRegistry

    project.configure(min_new_slice_lift=2.0)  # more than any difference of accuracies
    res = runner.invoke(app, ["retrain", "-c", str(project.root), "--rollout", "canary"])
    assert res.exit_code == 1, res.output
    assert "gate refused" in res.output and "new_slice_lift" in res.output and "--force" in res.output
    assert "not started" in res.output
    assert "challenger" not in ModelRegistry.from_config(project.cfg).aliases()
    assert len(Workspace(project.cfg.workspace_dir).list("model")) == 2  # the version is kept


@pytest.mark.slow
def test_start_from_the_champion_continues_its_adapter(project):
    from tunesmith.retrain.run import retrain

    project.configure(max_field_drop=1.0)
    events = []
    result = retrain(project.cfg, start="champion", train_log=events.append)
    ws = Workspace(project.cfg.workspace_dir)
    record_ = json.loads((ws.get("model", result.challenger).path / "model_version.json").read_text())
    assert record_["start"] == "champion" and record_["parent"] == project.champion
    assert ("model", project.champion, "continues") in ws.parents("model", result.challenger)
    init = [e for e in events if e.get("event") == "init_adapter"]
    assert init and init[0]["from"] == project.champion and init[0]["tensors"] > 0
    # the same inputs again: snapshot, training and comparisons reused, the same challenger
    steps = []
    again = retrain(project.cfg, start="champion", log=steps.append)
    assert again.challenger == result.challenger and again.evals == result.evals
    assert any(e["event"] == "compare_reused" for e in steps) and "already" in again.registration


@pytest.mark.slow
def test_the_champions_frozen_pack_answers_come_from_its_eval_when_the_settings_match(project):
    from tunesmith.evaluate.pack import load_pack
    from tunesmith.evaluate.runner import evaluate
    from tunesmith.retrain.compare import CHAMPION, stored_answers
    from tunesmith.retrain.run import retrain

    project.configure(max_field_drop=1.0)
    cfg = project.cfg
    ws = Workspace(cfg.workspace_dir)
    frozen = load_pack(ws, project.pack)
    assert stored_answers(ws, cfg, project.champion, frozen) is None  # no eval of the champion yet
    done = evaluate(cfg, model=project.champion)
    answers = done.results.ladder["finetuned"].answers
    stored = stored_answers(ws, cfg, project.champion, frozen)
    assert stored is not None and stored[1] == done.eval_id and stored[0].answers == answers
    # other answer settings: other answers, nothing reused
    other = cfg.model_copy(deep=True)
    other.eval.generation.max_new_tokens += 1
    assert stored_answers(ws, other, project.champion, frozen) is None
    steps = []
    result = retrain(cfg, log=steps.append)
    start = next(e for e in steps if e.get("event") == "compare_start" and e["kind"] == "frozen")
    assert start["reused"] == [CHAMPION] and any(done.eval_id in n for n in result.notes)
    assert result.frozen.champion.answers == answers


def test_the_adapter_init_equals_the_champions_weights_and_a_mismatch_is_refused(project):
    import torch
    from safetensors.torch import load_file

    from tunesmith.models.loading import (
        load_model,
        load_tokenizer,
        model_fingerprint,
        resolve_model,
    )
    from tunesmith.train.methods import apply_method, load_adapter_init

    cfg = project.cfg
    champion = Workspace(cfg.workspace_dir).get("model", project.champion)
    ref = resolve_model(str(cfg.resolve("tiny")))
    tok = load_tokenizer(ref)
    torch.manual_seed(0)
    model = apply_method(load_model(ref, dtype="float32", device="cpu"), cfg.train, tok)
    saved = load_file(str(champion.path / "adapter" / "adapter_model.safetensors"))
    before = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_B" in k}
    assert all(float(v.abs().sum()) == 0 for v in before.values())  # a fresh LoRA B starts at zero
    assert load_adapter_init(model, champion.path, cfg.train, base_fingerprint=model_fingerprint(ref)) == len(saved)
    params = dict(model.named_parameters())
    for key, value in saved.items():
        name = next(n for n in params if n.replace(".default", "") == key)
        assert torch.equal(params[name].detach(), value)

    cfg.train.lora.r = 8
    other = apply_method(load_model(ref, dtype="float32", device="cpu"), cfg.train, tok)
    with pytest.raises(TunesmithError, match=r"does not fit train\.lora"):
        load_adapter_init(other, champion.path, cfg.train)
    cfg.train.method = "full"
    with pytest.raises(TunesmithError, match=r"needs train\.method lora or dora"):
        load_adapter_init(other, champion.path, cfg.train)


def test_missing_champion_and_missing_export_are_clear_errors(project):
    import yaml

    from tunesmith.cli import app

    project.configure(corrections="data/none.jsonl")
    res = runner.invoke(app, ["retrain", "-c", str(project.root)])
    assert res.exit_code == 2 and "none.jsonl does not exist" in res.output and "tunesmith review export" in res.output
    path = project.root / "tunesmith.yaml"
    data = yaml.safe_load(path.read_text())
    data["workspace"] = "fresh-ws"  # a workspace nobody promoted a champion in
    data["eval"].pop("pack")
    path.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["retrain", "-c", str(project.root), "--json"])
    assert res.exit_code == 2 and "no champion" in res.output and "tunesmith promote" in res.output
    res = runner.invoke(app, ["retrain", "-c", str(project.root), "--rollout", "blue"])
    assert res.exit_code == 2 and "--rollout must be shadow or canary" in res.output
