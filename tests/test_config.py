import json

import pytest
import yaml

from tunesmith.config import Config, config_schema, load_config
from tunesmith.errors import ConfigError

MINIMAL = "data:\n  sources:\n    - path: data/*.jsonl\n"


def write(tmp_path, text):
    p = tmp_path / "tunesmith.yaml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults_and_resolves_paths(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.data.split.train == 0.8
    assert cfg.data.pii.enabled and cfg.data.dedup.near.threshold == 0.8
    assert cfg.workspace_dir == tmp_path / ".tunesmith"
    assert load_config(tmp_path).hash() == cfg.hash()  # a folder works too


def test_every_problem_reported_at_once_with_line_numbers(tmp_path):
    text = (
        "project: p\n"
        "data:\n"
        "  sources:\n"
        "    - path: a.jsonl\n"
        "      formatt: chat\n"          # line 5: typo
        "  dedup:\n"
        "    near: {bands: 10, rows: 8}\n"  # line 7: bands*rows != num_perm
        "  workers: -1\n"                # line 8: out of range
        "  pii: {action: shred}\n"        # line 9: not allowed
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    problems = info.value.problems
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    assert "line 5: data.sources.0.formatt: unknown key" in joined
    assert "line 7: data.dedup.near" in joined and "10 × 8 = 80" in joined
    assert "line 8: data.workers" in joined and "-1" in joined
    assert "line 9: data.pii.action" in joined and "'placeholder'" in joined and "shred" in joined
    assert str(tmp_path / "tunesmith.yaml") in str(info.value)


def test_split_ratios_must_sum_to_one(tmp_path):
    with pytest.raises(ConfigError, match=r"must be 1.0, got 0.5 \+ 0.1 \+ 0.1"):
        load_config(write(tmp_path, MINIMAL + "  split: {train: 0.5, validation: 0.1, test: 0.1}\n"))


def test_missing_sources_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="data: required key is missing"):
        load_config(write(tmp_path, "project: x\n"))
    with pytest.raises(ConfigError, match="line 3, column 1: invalid YAML"):
        load_config(write(tmp_path, "data:\n  sources: [\n"))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_column_mapping_validated(tmp_path):
    text = MINIMAL + "    - path: x.csv\n      format: table\n      columns: {prompt: body}\n"
    with pytest.raises(ConfigError, match="needs `prompt` and `completion` columns"):
        load_config(write(tmp_path, text))


def test_schema_lists_documented_fields():
    schema = config_schema()
    text = json.dumps(schema)
    assert "Jaccard similarity" in text and "additionalProperties" in text


def test_template_validates():
    from importlib.resources import files

    data = yaml.safe_load(files("tunesmith").joinpath("templates/tunesmith.yaml").read_text())
    assert Config.model_validate(data).data.sources[0].path == "data/*.jsonl"
