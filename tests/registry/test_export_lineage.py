"""`tunesmith export` publishes into the workspace with a lineage row, is idempotent, and shows up
in `models show` (text and JSON) and the model card; a bad results.json is named by `models show`.

The merge and the GGUF writer are replaced by a stand-in that writes known bytes (the real ones
are tested on a trained tiny model in tests/train/test_export.py), so what is checked here is the
publishing: where it goes, what the row says, and what happens the second time."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.errors import TunesmithError
from tunesmith.registry import ModelRegistry, to_json
from tunesmith.train import export as export_mod
from tunesmith.train.export import export_model


@pytest.fixture
def fake_merge(monkeypatch):
    """The model-loading steps replaced; returns the list of exports that really ran."""
    runs = []

    def export_into(out, job, gguf_dtype):
        runs.append(gguf_dtype)
        (out / "merged").mkdir()
        (out / "merged" / "model.safetensors").write_bytes(b"weights" * 100)
        (out / "merged" / "tokenizer.json").write_text("{}")
        if gguf_dtype:
            (out / f"model-{gguf_dtype}.gguf").write_bytes(b"GGUF" + bytes(64))
        return {"kind": "tunesmith.export", "model_id": job.art.id, "base_model": "starter", "method": "lora",
                "merged": "merged", "gguf": f"model-{gguf_dtype}.gguf" if gguf_dtype else None,
                "gguf_dtype": gguf_dtype, "checks": {"merged": {"passed": True, "max_abs_logit_diff": 1e-5}}}

    monkeypatch.setattr(export_mod, "_export_into", export_into)
    monkeypatch.setattr(export_mod, "_trained_config", lambda art, record: None)
    monkeypatch.setattr(export_mod, "check_gguf_architecture", lambda config: None)
    monkeypatch.setattr(export_mod, "check_gguf_tokenizer", lambda tok: {})
    monkeypatch.setattr(export_mod._Job, "prepare", classmethod(lambda cls, ws, art, *a: SimpleNamespace(art=art, tokenizer=None)))
    return runs


def test_export_is_a_workspace_artifact_with_a_lineage_row(project, fake_merge, tmp_path):
    model_id, _ = project.version()
    ws = project.ws
    out = export_model(ws, model_id[:8], gguf_dtype="f32")
    assert out.path == ws.artifact_dir("export", out.export_id) and out.merged_dir == out.path / "merged"
    assert out.gguf_path == out.path / "model-f32.gguf" and not out.reused and out.copied_to is None
    assert ws.parents("export", out.export_id) == [("model", model_id, "exported_from")]
    art = ws.get("export", out.export_id)
    assert art.meta["model"] == model_id and art.meta["formats"] == ["hf_safetensors", "gguf_f32"]
    assert art.meta["gguf"] == "model-f32.gguf" and art.meta["gguf_skipped"] is None
    # every file with its sha256, the same in the row and in export.json
    files = {f["path"]: f for f in art.meta["files"]}
    assert set(files) == {"merged/model.safetensors", "merged/tokenizer.json", "model-f32.gguf"}
    for name, f in files.items():
        data = (out.path / name).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
    report = json.loads(out.report_path.read_text())
    assert report["files"] == art.meta["files"] and report["export_id"] == out.export_id
    assert not list((ws.root / "tmp").iterdir())  # the staging folder went with the publish


def test_the_same_version_and_settings_again_reuse_the_export(project, fake_merge, tmp_path):
    model_id, _ = project.version()
    ws = project.ws
    first = export_model(ws, model_id, gguf=False, out_dir=tmp_path / "dist")
    assert first.copied_to == tmp_path / "dist" and (tmp_path / "dist" / "merged" / "model.safetensors").exists()
    (tmp_path / "dist" / "stale.txt").write_text("old")
    again = export_model(ws, model_id, gguf=False, out_dir=tmp_path / "dist")
    assert again.reused and again.export_id == first.export_id and fake_merge == [None]  # ran once
    assert len(ws.list("export")) == 1 and len(ws.parents("export", first.export_id)) == 1
    assert not (tmp_path / "dist" / "stale.txt").exists()  # --out gets a fresh copy
    # other settings are another export of the same version
    other = export_model(ws, model_id, gguf_dtype="q8_0")
    assert other.export_id != first.export_id and fake_merge == [None, "q8_0"]
    assert [x.export_id for x in ModelRegistry.from_config(project.cfg).show(model_id).exports] == [
        first.export_id, other.export_id]


def test_a_damaged_published_export_is_refused_not_reused(project, fake_merge):
    model_id, _ = project.version()
    out = export_model(project.ws, model_id, gguf=False)
    (out.merged_dir / "model.safetensors").write_bytes(b"x")
    with pytest.raises(TunesmithError, match=r"model\.safetensors is missing or changed since it was published"):
        export_model(project.ws, model_id, gguf=False)


def test_a_failed_check_publishes_nothing(project, fake_merge, monkeypatch, tmp_path):
    model_id, _ = project.version()

    def fail(out, job, gguf_dtype):
        (out / "merged").mkdir()
        raise TunesmithError("merged model differs from the trained adapter")

    monkeypatch.setattr(export_mod, "_export_into", fail)
    with pytest.raises(TunesmithError, match="differs"):
        export_model(project.ws, model_id, out_dir=tmp_path / "dist")
    assert project.ws.list("export") == [] and not (tmp_path / "dist").exists()
    assert not list((project.ws.root / "tmp").iterdir())


def test_models_show_lists_exports_in_text_json_and_the_card(project, fake_merge):
    model_id, _ = project.version()
    out = export_model(project.ws, model_id, gguf_dtype="f16")
    c = str(project.root)
    res = CliRunner().invoke(app, ["models", "show", model_id, "-c", c])
    assert res.exit_code == 0, res.output
    assert "→ exports" in res.output and out.export_id in res.output and "hf_safetensors, gguf_f16" in res.output
    data = json.loads(CliRunner().invoke(app, ["models", "show", model_id, "-c", c, "--json"]).stdout)
    (exp,) = data["exports"]
    assert exp["export_id"] == out.export_id and exp["gguf"] == "model-f16.gguf" and exp["path"] == str(out.path)
    assert {f["path"] for f in exp["files"]} == {"merged/model.safetensors", "merged/tokenizer.json", "model-f16.gguf"}
    card = ModelRegistry.from_config(project.cfg).card(model_id)
    sha = hashlib.sha256((out.path / "model-f16.gguf").read_bytes()).hexdigest()[:16]
    assert "## Exports" in card and f"`{sha}`" in card
    assert to_json(ModelRegistry.from_config(project.cfg).show(model_id))["exports"] == data["exports"]


def test_export_cli_json_names_the_artifact_and_reuse(project, fake_merge, tmp_path):
    model_id, _ = project.version()
    args = ["export", "-c", str(project.root), "--model", model_id[:8], "--gguf", "off", "--json"]
    first = json.loads(CliRunner().invoke(app, args).stdout.strip().splitlines()[-1])
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "dist")])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout.strip().splitlines()[-1])
    assert first["reused"] is False and again["reused"] is True and again["export_id"] == first["export_id"]
    assert again["copied_to"] == str(tmp_path / "dist") and again["formats"] == ["hf_safetensors"]
    assert again["path"].startswith(str(project.ws.root)) and again["gguf"] is None
    # --model also takes an alias
    assert CliRunner().invoke(app, ["promote", model_id, "-c", str(project.root), "--by", "ann"]).exit_code == 0
    by_alias = CliRunner().invoke(app, ["export", "-c", str(project.root), "--model", "champion", "--gguf", "off",
                                        "--json"])
    assert json.loads(by_alias.stdout.strip().splitlines()[-1])["export_id"] == first["export_id"]


def test_models_show_names_a_bad_results_file_and_key(project):
    model_id, _ = project.version()
    path = project.ws.latest("eval").path / "results.json"
    data = json.loads(path.read_text())
    data["gate"]["checks"][0]["passed"] = "maybe"
    path.write_text(json.dumps(data))
    res = CliRunner().invoke(app, ["models", "show", model_id, "-c", str(project.root)])
    assert res.exit_code == 2
    assert "results.json" in res.output and "gate.checks.0.passed" in res.output
