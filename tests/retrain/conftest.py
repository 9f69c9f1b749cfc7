"""A tiny project with a champion, a pinned eval pack and a reviewed-corrections export: a random
Llama (tests/models/tiny.py), 60 labelled tickets, a LoRA champion trained for a few steps and an
export artifact written the way ``tunesmith review export`` writes it (nothing is served)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

EVAL = {"rungs": ["finetuned"], "output": {"kind": "label"}, "probes": False, "forgetting": False,
        "max_cases": 12, "bootstrap_resamples": 200, "generation": {"max_new_tokens": 4, "batch_size": 32}}


def correction(i: int, label: str = "account") -> dict:
    """A reviewed record (a new product line's tickets, answered 'account' by the reviewer)."""
    user = f"order {i} for the new gizmo line stopped syncing, serial G{i * 13 % 97}, what now"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": label}],
            "meta": {"review_item": i, "request_id": f"req-{i}", "choice": 0, "model_version": "v1",
                     "reviewer": "ana", "review_action": "correct", "review_decision": 100 + i,
                     "decided_at": 1000.0 + i, "review_tier": "sampled"}}


def publish_export(ws, records: list[dict]) -> str:
    """A reviewset artifact as review/export.py publishes it."""
    import hashlib

    body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    export_id = hashlib.sha256(body.encode()).hexdigest()[:16]
    with ws.staging() as staging:
        (staging / "reviewed.jsonl").write_text(body)
        (staging / "manifest.json").write_text(json.dumps({"id": export_id, "records": len(records)}))
        ws.publish(staging, "reviewset", export_id, meta={"records": len(records)})
    return export_id


@dataclass
class Project:
    root: Path
    champion: str
    pack: str
    snapshot: str

    @property
    def cfg(self):
        from tunesmith.config import load_config

        return load_config(self.root)

    def configure(self, **retrain) -> None:
        path = self.root / "tunesmith.yaml"
        data = yaml.safe_load(path.read_text())
        data["retrain"] = {**data.get("retrain", {}), **retrain}
        path.write_text(yaml.safe_dump(data))


def build_project(root: Path, *, corrections: int = 40, train_steps: int = 4) -> Project:
    from train.test_trainer import make_project
    from tunesmith.config import load_config
    from tunesmith.evaluate.pack import build_pack
    from tunesmith.registry import ModelRegistry
    from tunesmith.train.recipe import train
    from tunesmith.workspace import Workspace

    path = make_project(root, f"{{max_steps: {train_steps}, eval_every: 100, save_every: 100}}")
    data = yaml.safe_load(path.read_text())
    data["eval"] = EVAL
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(root)
    champion = train(cfg).model_id
    ws = Workspace(cfg.workspace_dir)
    snap = ws.latest("snapshot")
    pack = build_pack(cfg, ws, snap.id, snap.path)
    data["eval"]["pack"] = pack.id
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(root)
    ModelRegistry.from_config(cfg).promote(champion, "champion", force=True, reason="test champion", by="test")
    if corrections:
        publish_export(ws, [correction(i) for i in range(corrections)])
    return Project(root, champion, pack.id, snap.id)


@pytest.fixture
def project(tmp_path) -> Project:
    return build_project(tmp_path / "p")
