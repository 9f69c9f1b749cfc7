"""Synthetic workspaces for the registry tests: snapshot, model version, eval pack and eval
artifacts published with ``Workspace.publish`` and the same files and meta the real stages write
(data/pipeline.py, train/recipe.py, evaluate/pack.py, evaluate/runner.py). Nothing is trained."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from tunesmith.config import load_config
from tunesmith.workspace import Workspace

_ids = itertools.count()


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([*parts, next(_ids)], default=str).encode()).hexdigest()


class FakeProject:
    """A project folder with a tunesmith.yaml and a workspace filled by hand."""

    def __init__(self, root: Path, *, mlflow: bool = False, pinned_pack: str | None = None,
                 system_prompt: str | None = "You triage support tickets. Answer in JSON."):
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / "tickets.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
        lines = ["project: support-triage", "data:", "  sources:", "    - path: data/tickets.jsonl",
                 "train:", "  tracking:", f"    mlflow: {str(mlflow).lower()}", "    tensorboard: false"]
        if system_prompt:
            lines += ["model:", f"  system_prompt: {json.dumps(system_prompt)}"]
        if pinned_pack:
            lines += ["eval:", f"  pack: {pinned_pack}"]
        (root / "tunesmith.yaml").write_text("\n".join(lines) + "\n")
        self.cfg = load_config(root)
        self.ws = Workspace(self.cfg.workspace_dir)

    def pin(self, pack: str) -> None:
        text = (self.root / "tunesmith.yaml").read_text()
        (self.root / "tunesmith.yaml").write_text(text + f"eval:\n  pack: {pack}\n")
        self.cfg = load_config(self.root)

    # ------------------------------------------------------------------ artifacts
    def snapshot(self) -> str:
        snapshot_id = _digest("snapshot")[:20]
        manifest = {
            "kind": "tunesmith.snapshot", "project": "support-triage", "config_hash": "d" * 16, "seed": 13,
            "snapshot_id": snapshot_id,
            "sources": [{"path": "data/tickets.jsonl", "sha256": "ab" * 32, "bytes": 1234, "format": "auto"}],
            "counts": {"read": 120, "kept": 100, "dropped": 15, "quarantined": 5,
                       "splits": {"train": 80, "validation": 10, "test": 10},
                       "dropped_by_stage": {"exact_dedup": 10, "filter": 5},
                       "dropped_by_reason": {"exact_dedup:duplicate": 10, "filter:too_short": 5},
                       "pii": {"EMAIL": 7, "PHONE": 3}, "normalised": 4, "near_duplicate_clusters": 2},
            "contamination": {"checked_test_examples": 10, "over_threshold": 0, "examples": []},
            "config": {"pii": {"enabled": True, "action": "placeholder", "entities": {"PERSON": "pseudonym"},
                               "names": "rules", "roles": ["system", "user", "assistant", "text"]}},
        }
        with self.ws.staging() as staging:
            (staging / "manifest.json").write_text(json.dumps(manifest))
            (staging / "quarantine.jsonl").write_text("")
            self.ws.publish(staging, "snapshot", snapshot_id,
                            meta={"counts": manifest["counts"], "config_hash": "d" * 16, "input_key": "k"})
        return snapshot_id

    def model(self, snapshot_id: str, *, mlflow_run_id: str | None = None, method: str = "lora",
              model_id: str | None = None) -> str:
        model_id = model_id or _digest("model", snapshot_id)[:20]
        run_dir = self.cfg.workspace_dir / "runs" / f"train-{model_id[:12]}"
        run_dir.mkdir(parents=True)
        if mlflow_run_id:
            (run_dir / "mlflow_run_id").write_text(mlflow_run_id)
        lineage = {"run_key": model_id[:12], "base_model": "starter", "base_location": "/cache/starter",
                   "base_fingerprint": "f" * 16, "snapshot": snapshot_id, "rehearsal": None,
                   "config_hash": "c" * 16, "method": method, "tunesmith": "0.1.0", "seed": 13}
        metrics = {"steps": 220, "best_step": 200, "best_val_loss": 0.4321, "final_val_loss": 0.45,
                   "tokens_per_second": 250.0, "seconds": 600.0, "train_examples": 80}
        record = {"kind": "tunesmith.model_version", "id": model_id, **lineage, "metrics": metrics,
                  "config": {"model": self.cfg.model.model_dump(mode="json"),
                             "train": self.cfg.train.model_dump(mode="json")},
                  "weights": "adapter", "run_dir": str(run_dir)}
        with self.ws.staging() as staging:
            (staging / "adapter").mkdir()
            (staging / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 16)
            (staging / "model_version.json").write_text(json.dumps(record, indent=1))
            self.ws.publish(staging, "model", model_id, parents=[("snapshot", snapshot_id, "trained_on")],
                            meta={k: record[k] for k in ("run_key", "base_model", "base_fingerprint", "snapshot",
                                                         "config_hash", "method", "tunesmith", "metrics")})
        return model_id

    def pack(self, snapshot_id: str) -> str:
        pack_id = _digest("pack", snapshot_id)[:16]
        with self.ws.staging() as staging:
            (staging / "pack.json").write_text(json.dumps({"cases": [], "probes": [], "general_qa": [],
                                                           "general_text": [], "settings": {}}))
            self.ws.publish(staging, "evalpack", pack_id, meta={"cases": 60, "probes": 8, "snapshot": snapshot_id},
                            parents=[("snapshot", snapshot_id, "test_cases_from")])
        return pack_id

    def eval(self, model_id: str, pack_id: str, *, passed: bool = True, ft: float = 0.8,
             urgency_low: float = -0.2) -> str:
        """An eval of ``model_id`` on ``pack_id``; ``passed=False`` fails the lift and significance checks."""
        headline = "fields_mean"

        def ci(m: float) -> dict[str, Any]:
            return {"mean": m, "low": round(m - 0.06, 3), "high": round(m + 0.06, 3), "n": 60}

        means = {"zero_shot": 0.0, "few_shot": 0.66, "rag": 0.1, "finetuned": ft, "finetuned_rag": 0.64}
        ladder = {r: {"metrics": {headline: ci(m), "field/category": ci(m), "field/urgency": ci(m)}}
                  for r, m in means.items()}
        diff = round(ft - 0.66, 3)
        cmp = {"baseline": "few_shot", "rung": "finetuned", "diff": diff, "low": diff - 0.1, "high": diff + 0.1,
               "n": 60, "excludes_zero": float(passed)}
        checks = [
            {"name": "lift", "passed": passed, "value": diff, "threshold": 0.0,
             "detail": "fine-tuned − few_shot on fields_mean"},
            {"name": "significant", "passed": passed, "value": diff - 0.1, "threshold": 0.0,
             "detail": "95% CI of the difference must be above 0"},
            {"name": "forgetting", "passed": True, "value": 0.1, "threshold": 0.25,
             "detail": "relative change of general-text perplexity (after vs before)"},
        ]
        results = {
            "headline": headline, "pack": pack_id, "model": model_id, "snapshot": None, "cases": 60,
            "ladder": ladder, "finetuned_vs_best_baseline": cmp,
            "fields_vs_best_baseline": {
                "category": {"diff": 0.28, "low": 0.15, "high": 0.4, "n": 60, "excludes_zero": 1.0},
                "urgency": {"diff": -0.067, "low": urgency_low, "high": 0.067, "n": 60, "excludes_zero": 0.0}},
            "forgetting": {"ppl_before": 12.0, "ppl_after": 13.2, "ppl_relative_change": 0.1,
                           "qa_before": 0.5, "qa_after": 0.45, "qa_drop": 0.05},
            "probes": {"finetuned": {"refusal_rate": 0.5, "injection_followed": 0, "injection_probes": 8}},
            "gate": {"passed": passed, "checks": checks},
            "recommendation": "Fine-tune." if passed else "Prompting is enough.",
            "input_key": _digest("key")[:20],
        }
        eval_id = _digest("eval", model_id, pack_id)[:16]
        with self.ws.staging() as staging:
            (staging / "results.json").write_text(json.dumps(results, indent=1))
            self.ws.publish(staging, "eval", eval_id,
                            parents=[("evalpack", pack_id, "evaluated_on"), ("model", model_id, "evaluates")],
                            meta={"headline": headline, "passed": passed, "model": model_id, "pack": pack_id,
                                  "input_key": results["input_key"]})
        self.ws.record_eval(eval_id, model_id, pack_id, {r: v["metrics"] for r, v in ladder.items()})
        return eval_id

    def version(self, *, passed: bool = True, snapshot: str | None = None, pack: str | None = None,
                **kwargs: Any) -> tuple[str, str]:
        """A model version with one eval; returns (model id, pack id)."""
        snapshot = snapshot or self.snapshot()
        model_id = self.model(snapshot, **kwargs)
        pack = pack or self.pack(snapshot)
        self.eval(model_id, pack, passed=passed)
        return model_id, pack


@pytest.fixture
def project(tmp_path: Path) -> FakeProject:
    return FakeProject(tmp_path / "proj")
