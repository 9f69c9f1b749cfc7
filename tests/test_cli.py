import json

from typer.testing import CliRunner

from tunesmith.cli import app

runner = CliRunner()


def test_init_writes_a_valid_commented_config(tmp_path):
    res = runner.invoke(app, ["init", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "p" / "tunesmith.yaml").read_text()
    assert "# tunesmith.yaml" in text
    res = runner.invoke(app, ["init", str(tmp_path / "p")])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(app, ["config", "check", "-c", str(tmp_path / "p"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"]


def test_bad_config_exits_2_with_message_not_traceback(tmp_path):
    (tmp_path / "tunesmith.yaml").write_text("data:\n  sources: []\n  wokers: 2\n")
    res = runner.invoke(app, ["prepare", "-c", str(tmp_path)])
    assert res.exit_code == 2
    assert "line 3: data.wokers: unknown key" in res.output
    assert "data.sources" in res.output
    assert "Traceback" not in res.output


def test_unknown_template(tmp_path):
    res = runner.invoke(app, ["init", str(tmp_path), "--template", "nope"])
    assert res.exit_code == 2 and "unknown template 'nope'" in res.output


def test_schema_is_json():
    res = runner.invoke(app, ["config", "schema"])
    assert res.exit_code == 0 and "properties" in json.loads(res.stdout)


def test_prepare_json_summary(tmp_path):
    (tmp_path / "data").mkdir()
    rec = {"messages": [{"role": "user", "content": "My parcel has not arrived after two weeks, please check it."},
                        {"role": "assistant", "content": "shipping"}]}
    (tmp_path / "data" / "a.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n{bad\n")
    (tmp_path / "tunesmith.yaml").write_text("data:\n  sources:\n    - path: data\n  workers: 1\n")
    res = runner.invoke(app, ["prepare", "-c", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["counts"]["read"] == 3 and summary["counts"]["quarantined"] == 1
    assert summary["counts"]["kept"] == 1 and summary["snapshot_id"]
