"""`tunesmith models` / `models show` / `models card` / `promote` / `rollback` through typer."""

import json

from typer.testing import CliRunner

from tunesmith.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_models_lists_versions_as_a_table_and_as_json(project):
    good, pack = project.version()
    bad, _ = project.version(pack=pack, passed=False)
    c = str(project.root)
    assert invoke("promote", good, "-c", c, "--by", "ann").exit_code == 0
    res = invoke("models", "-c", c)
    assert res.exit_code == 0, res.output
    assert good[:12] in res.output and bad[:12] in res.output and "fields_mean" in res.output
    assert "passed" in res.output and "failed" in res.output and "champion" in res.output
    data = json.loads(invoke("models", "-c", c, "--json").stdout)
    assert set(data) == {"project", "workspace", "gate_pack", "aliases", "versions"}
    assert data["aliases"] == {"champion": good} and data["gate_pack"] is None
    row = data["versions"][0]
    assert row["id"] == good and row["aliases"] == ["champion"] and row["gate_passed"] is True
    assert row["eval_pack"] == pack and row["headline"] == {"metric": "fields_mean", "rung": "finetuned",
                                                            "mean": 0.8, "low": 0.74, "high": 0.86, "n": 60}
    assert data["versions"][1]["gate_passed"] is False


def test_an_empty_workspace_lists_nothing(project):
    res = invoke("models", "-c", str(project.root))
    assert res.exit_code == 0 and "no model version" in res.output
    assert json.loads(invoke("models", "-c", str(project.root), "--json").stdout)["versions"] == []


def test_show_prints_the_lineage_and_its_json(project):
    model_id, pack = project.version(mlflow_run_id="run-7")
    c = str(project.root)
    invoke("promote", model_id, "-c", c, "--by", "ann")
    res = invoke("models", "show", "champion", "-c", c)
    assert res.exit_code == 0, res.output
    for part in ("source files", "data/tickets.jsonl", "→ snapshot", "→ training run", "MLflow run run-7",
                 "→ model version", "→ evals", f"pack {pack}", "→ alias moves", "by ann"):
        assert part in res.output, part
    # -c and --json may also come before the subcommand
    data = json.loads(invoke("models", "-c", c, "--json", "show", model_id[:6]).stdout)
    assert set(data) == {"version", "path", "base_fingerprint", "tunesmith_version", "snapshot", "training",
                         "evals", "alias_moves", "exports"}
    assert data["exports"] == []  # none yet: tests/registry/test_export_lineage.py
    assert data["training"]["mlflow_run_id"] == "run-7" and list(data["evals"]) == [pack]
    assert data["alias_moves"][0]["by"] == "ann" and data["snapshot"]["counts"]["read"] == 120


def test_promote_without_a_passed_gate_exits_2_and_force_records_the_reason(project):
    good, pack = project.version()
    bad, _ = project.version(pack=pack, passed=False)
    c = str(project.root)
    invoke("promote", good, "-c", c)
    res = invoke("promote", bad[:10], "-c", c)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "gate failed" in res.output and "lift" in res.output and "--force --reason" in res.output
    assert invoke("promote", bad, "-c", c, "--force").exit_code == 2  # a reason is required
    res = invoke("promote", bad, "-c", c, "--force", "--reason", "board demo", "--by", "bob", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["changed"] and data["previous"] == good and data["model_id"] == bad
    assert data["move"]["forced"] and data["move"]["reason"] == "board demo" and data["move"]["by"] == "bob"
    assert data["gate"]["passed"] is False and data["gate"]["pinned"] is False and data["gate"]["pack"] == pack
    assert data["mlflow"] is None  # tracking off in this project


def test_promote_names_the_pack_whose_gate_was_used(project):
    model_id, pack = project.version()
    res = invoke("promote", model_id, "-c", str(project.root), "--alias", "challenger")
    assert res.exit_code == 0, res.output
    assert "challenger" in res.output and f"latest eval (pack {pack})" in res.output
    project.pin(pack)
    res = invoke("promote", model_id, "-c", str(project.root))
    assert f"the pinned eval pack {pack} (eval.pack)" in res.output


def test_rollback_restores_the_previous_version(project):
    a, pack = project.version()
    b, _ = project.version(pack=pack)
    c = str(project.root)
    invoke("promote", a, "-c", c)
    invoke("promote", b, "-c", c)
    res = invoke("rollback", "-c", c, "--reason", "errors up", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["model_id"], data["previous"], data["move"]["action"]) == (a, b, "rollback")
    res = invoke("rollback", "-c", c)
    assert res.exit_code == 2 and "no earlier version to roll back to" in res.output
    res = invoke("rollback", "-c", c, "--alias", "canary")
    assert res.exit_code == 2 and "has never been set" in res.output


def test_unknown_id_or_alias_exits_2(project):
    project.version()
    c = str(project.root)
    for args in (("models", "show", "nope", "-c", c), ("promote", "nope", "-c", c),
                 ("models", "card", "@champion", "-c", c)):
        res = invoke(*args)
        assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output, args


def test_card_goes_to_stdout_or_a_file(project, tmp_path):
    model_id, _ = project.version()
    res = invoke("models", "card", model_id, "-c", str(project.root))
    assert res.exit_code == 0 and res.stdout.startswith("# Model card: support-triage")
    target = tmp_path / "card.md"
    res = invoke("models", "card", model_id, "-c", str(project.root), "--out", str(target))
    assert res.exit_code == 0 and "## Known limits" in target.read_text()
