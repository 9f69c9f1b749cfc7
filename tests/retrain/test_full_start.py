"""``retrain.start: champion`` for a full fine-tune: the new run starts from the champion's
whole weights (the demo's version is a full fine-tune of the top layers)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tunesmith.errors import TunesmithError
from tunesmith.train.methods import load_full_init


def _version(path, model, weights="model"):
    (path / "model").mkdir(parents=True)
    model.save_pretrained(path / "model", safe_serialization=True)
    (path / "model_version.json").write_text(json.dumps({"method": "full", "weights": weights,
                                                          "base_fingerprint": "abc"}))
    return path


def test_full_init_copies_every_weight(tmp_path):
    from models.tiny import build_model, build_tokenizer

    tok = build_tokenizer()
    champion, fresh = build_model("llama", tok, seed=0), build_model("llama", tok, seed=1)
    version = _version(tmp_path / "v1", champion)
    assert not torch.equal(fresh.model.layers[0].mlp.up_proj.weight, champion.model.layers[0].mlp.up_proj.weight)
    loaded = load_full_init(fresh, version, base_fingerprint="abc")
    assert loaded > 0
    for (name, a), b in zip(champion.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_full_init_refuses_what_does_not_fit(tmp_path):
    from models.tiny import build_model, build_tokenizer

    tok = build_tokenizer()
    model = build_model("llama", tok)
    with pytest.raises(TunesmithError, match="holds no full weights"):
        load_full_init(model, _version(tmp_path / "a", model, weights="adapter"))
    with pytest.raises(TunesmithError, match="another base model"):
        load_full_init(model, _version(tmp_path / "b", model), base_fingerprint="other")
    other = build_model("gpt2", tok)
    with pytest.raises(TunesmithError, match="do not fit this model"):
        load_full_init(model, _version(tmp_path / "c", other))


@pytest.mark.slow
def test_retrain_continues_a_full_champion(tmp_path):
    from retrain.conftest import EVAL, correction, publish_export
    from train.test_trainer import make_project
    from tunesmith.config import load_config
    from tunesmith.evaluate.pack import build_pack
    from tunesmith.registry import ModelRegistry
    from tunesmith.retrain.run import retrain
    from tunesmith.train.recipe import train
    from tunesmith.workspace import Workspace

    root = tmp_path / "p"
    path = make_project(root, "{max_steps: 2, eval_every: 100, save_every: 100, method: full, full: {top_layers: 1}}")
    data = yaml.safe_load(path.read_text())
    data["eval"] = EVAL
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(root)
    champion = train(cfg).model_id
    ws = Workspace(cfg.workspace_dir)
    snap = ws.latest("snapshot")
    data["eval"]["pack"] = build_pack(cfg, ws, snap.id, snap.path).id
    data["retrain"] = {"max_field_drop": 1.0, "min_new_slice_lift": -1.0}
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(root)
    ModelRegistry.from_config(cfg).promote(champion, "champion", force=True, reason="test champion", by="test")
    publish_export(ws, [correction(i) for i in range(30)])
    events: list[dict] = []
    result = retrain(cfg, start="champion", train_log=events.append)
    init = [e for e in events if e.get("event") == "init_adapter"]
    assert init and init[0]["from"] == champion and init[0]["tensors"] > 0
    record = json.loads((ws.get("model", result.challenger).path / "model_version.json").read_text())
    assert record["start"] == "champion" and record["parent"] == champion and record["weights"] == "model"
    lora = cfg.model_copy(deep=True)
    lora._base_dir = cfg.base_dir
    lora.train.method = "lora"
    with pytest.raises(TunesmithError, match="same kind of method"):
        retrain(lora, start="champion")
