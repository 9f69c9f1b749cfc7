"""The eval pack: a frozen, versioned, content-hashed set of test cases, probes, general-ability
sets and metric/gate settings. Built once from a snapshot's test split (plus user files) and
re-run unchanged on every model version, so numbers stay comparable over time.

A pack lives in ``artifacts/evalpack/<id>/`` (id = hash of its content). ``eval.pack`` pins one;
otherwise the pack built from the same snapshot and settings is reused (same content, same id).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import Config, SourceConfig
from tunesmith.data.arrow import dumps
from tunesmith.data.example import Example
from tunesmith.data.pipeline import load_split
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.outputs import check_headline, resolve_output
from tunesmith.evaluate.probes import (
    Probe,
    general_qa,
    general_text,
    injection_probes,
    refusal_probes,
)
from tunesmith.workspace import Workspace

PACK_KIND = "evalpack"
FROZEN_SETTINGS = ("output", "gate")  # metric and gate settings travel with the pack


@dataclass
class EvalPack:
    id: str
    path: Path | None
    cases: list[Example]
    probes: list[Probe]
    general_qa: list[dict[str, str]]
    general_text: list[str]
    settings: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def injection(self) -> list[Probe]:
        return [p for p in self.probes if p.kind == "injection"]

    @property
    def refusal(self) -> list[Probe]:
        return [p for p in self.probes if p.kind == "refusal"]


def _read_extra(cfg: Config, path: str) -> list[Example]:
    """Labelled records that never went through prepare, shaped as it shapes the test split
    (and as the server shapes requests: ``serve.shape_inputs``)."""
    from tunesmith.data.ingest import Quarantined, expand_source, read_source
    from tunesmith.data.pipeline import input_shaper, shape_example

    src = SourceConfig(path=path)
    shape = input_shaper(cfg)
    out = []
    for p in expand_source(src, cfg.base_dir):
        for rec in read_source(src, p, base_dir=cfg.base_dir, max_line_bytes=cfg.data.max_line_bytes):
            if isinstance(rec, Quarantined):
                raise TunesmithError(f"eval.extra_cases: {rec.source} {rec.location}: {rec.error}")
            out.append(rec if shape is None else shape_example(rec, shape))
    return out


def _select_cases(cfg: Config, snap_dir: Path) -> list[Example]:
    test = load_split(snap_dir, "test")
    if cfg.eval.max_cases and len(test) > cfg.eval.max_cases:
        rng = random.Random(cfg.seed)
        keep = sorted(rng.sample(range(len(test)), cfg.eval.max_cases))
        test = [test[i] for i in keep]
    cases = test + [ex for path in cfg.eval.extra_cases for ex in _read_extra(cfg, path)]
    cases = [ex for ex in cases if ex.is_chat and ex.answer_text()]
    if not cases:
        raise TunesmithError(
            "the eval pack has no test cases: the snapshot's test split is empty (check data.split.test) "
            "and eval.extra_cases adds none"
        )
    return cases


def _content(cases: list[Example], probes: list[Probe], qa: list, text: list, settings: dict) -> dict[str, Any]:
    return {"cases": [ex.to_dict() for ex in cases], "probes": [p.to_dict() for p in probes],
            "general_qa": qa, "general_text": text, "settings": settings}


def build_pack(cfg: Config, ws: Workspace, snapshot_id: str, snap_dir: Path) -> EvalPack:
    """Build the pack for (snapshot, settings) and publish it, or return the identical one."""
    cases = _select_cases(cfg, snap_dir)
    probes = (refusal_probes() + injection_probes(cases, cfg.seed)) if cfg.eval.probes else []
    qa, text = (general_qa(cfg.seed), general_text()) if cfg.eval.forgetting else ([], [])
    settings = {k: getattr(cfg.eval, k).model_dump(mode="json") for k in FROZEN_SETTINGS}
    # the label set (given, from the schema, or inferred from training answers) freezes with it
    output = resolve_output(cfg.eval.output, load_split(snap_dir, "train"))
    check_headline(output, cases)
    settings["output"] = output.model_dump(mode="json")
    content = _content(cases, probes, qa, text, settings)
    pack_id = hashlib.sha256(dumps(content).encode()).hexdigest()[:16]
    art_dir = ws.artifact_dir(PACK_KIND, pack_id)
    if not art_dir.exists():
        with ws.staging() as staging:
            (staging / "pack.json").write_text(json.dumps(content, indent=1, ensure_ascii=False))
            ws.publish(staging, PACK_KIND, pack_id, meta={"cases": len(cases), "probes": len(probes),
                                                         "snapshot": snapshot_id},
                       parents=[("snapshot", snapshot_id, "test_cases_from")])
    return load_pack(ws, pack_id)


def load_pack(ws: Workspace, pack_id: str) -> EvalPack:
    art = ws.get(PACK_KIND, pack_id)
    data = json.loads((art.path / "pack.json").read_text())
    cases = [Example(c["id"], c["messages"], c["text"], c["meta"]) for c in data["cases"]]
    probes = [Probe(p["id"], p["kind"], p["messages"], p["canary"], p["meta"]) for p in data["probes"]]
    return EvalPack(art.id, art.path, cases, probes, data["general_qa"], data["general_text"],
                    data["settings"], art.meta)
