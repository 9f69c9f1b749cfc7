"""The data of a retrain: a new snapshot through the normal ``prepare``, then the training mix.

    1. sources      the reviewed corrections first (so dedup keeps a correction over an older
                    near-copy with the old label), the ``--add`` files, then the configured
                    sources (a configured source that is itself a review export is replaced by
                    the export this retrain reads: one item, one record)
    2. prepare      normalise, filters, PII, dedup, split: every record accounted for as usual
    3. the mix      train = new examples (not in the previous training split) + the corrections
                    not held out (whatever split prepare gave them) + a seeded rehearsal sample
                    of the previous training split, sized so that it is ``rehearsal_ratio`` of
                    the mix; validation = the new validation split without corrections
    4. guards       nothing whose input is a frozen-pack case or a held-out correction is
                    trained on or validated on (prepare re-splits, so an old test case can land
                    in the new train split); previous examples whose input got a new answer are
                    not rehearsed (the correction supersedes them). Every exclusion is counted.

The mix is published as a snapshot artifact of its own (train/validation/test Parquet files and a
manifest whose ``retrain_mix`` section records the counts, the ratio asked and achieved, the
seed and the parents), so ``train`` takes it like any snapshot and the model version's lineage
leads back to both snapshots and the export.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from tunesmith.config import Config, SourceConfig
from tunesmith.data.arrow import dumps, to_table
from tunesmith.data.example import Example
from tunesmith.data.ingest import expand_source
from tunesmith.data.pipeline import load_split
from tunesmith.data.split import SPLITS
from tunesmith.errors import TunesmithError
from tunesmith.retrain.corrections import SLICE_KEY, Corrections, is_review_export
from tunesmith.review.answers import input_hash
from tunesmith.workspace import Workspace

MIX_KEY = "retrain_mix"  # meta key on each training example: new | correction | rehearsal


@dataclass
class DataMix:
    """What the retrain trains on, and what it left out and why."""

    snapshot: str  # the new snapshot (prepare)
    mix_snapshot: str  # the published mix (what train reads)
    previous_snapshot: str  # the champion's training snapshot (rehearsal source)
    counts: dict[str, int]  # new, correction, rehearsal, validation, new_slice
    excluded: dict[str, int]  # reason -> examples left out
    ratio_asked: float
    ratio_achieved: float
    replaced_sources: list[str] = field(default_factory=list)  # configured review exports replaced
    new_slice: list[Example] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "mix_snapshot": self.mix_snapshot,
                "previous_snapshot": self.previous_snapshot, "counts": self.counts, "excluded": self.excluded,
                "rehearsal_ratio": {"asked": self.ratio_asked, "achieved": round(self.ratio_achieved, 4)},
                "replaced_sources": self.replaced_sources}


def retrain_sources(cfg: Config, corrections: Corrections, add: list[Path]) -> tuple[list[SourceConfig], list[str]]:
    """Corrections first, then ``--add`` files, then the configured sources (review exports
    among them dropped: the export read here holds all their items with the latest decisions)."""
    sources = [SourceConfig(path=str(corrections.tagged), format="chat")]
    for path in add:
        if not path.exists():
            raise TunesmithError(f"--add {path}: no such file or folder")
        sources.append(SourceConfig(path=str(path.resolve())))
    replaced = []
    for src in cfg.data.sources:
        files = expand_source(src, cfg.base_dir)
        if files and all(is_review_export(f) for f in files):
            replaced.append(src.path)
            continue
        sources.append(src)
    return sources, replaced


def content_key(ex: Example) -> str:
    """Identity of an example across snapshots: its turns (or text), not its id or meta."""
    return hashlib.sha256(dumps([ex.messages, ex.text]).encode()).hexdigest()


def _input(ex: Example) -> str | None:
    return input_hash(ex.messages) if ex.is_chat else None


def build_mix(cfg: Config, ws: Workspace, *, snapshot: str, snapshot_dir: Path, previous: str,
              frozen_hashes: frozenset[str], corrections: Corrections, replaced: list[str]) -> DataMix:
    """Split the new snapshot into new data, corrections and the new slice; add the rehearsal
    sample; publish the mix as a snapshot (see the module docstring)."""
    splits = {s: load_split(snapshot_dir, s) for s in SPLITS}
    prev_train = load_split(ws.get("snapshot", previous).path, "train")
    prev_keys = {content_key(ex) for ex in prev_train}
    excluded: dict[str, int] = {}

    def drop(reason: str) -> None:
        excluded[reason] = excluded.get(reason, 0) + 1

    new_slice, fixes, fresh, validation, test = [], [], [], [], []
    for split, examples in splits.items():
        for ex in examples:
            side = ex.meta.get(SLICE_KEY)
            if _input(ex) in frozen_hashes:
                if side or split != "test":  # a frozen case back in the test split is where it belongs
                    drop(f"frozen_pack_input:{side or split}")
                continue
            if side == "new_slice":
                new_slice.append(ex)
            elif side == "train":
                fixes.append(ex)
            elif split == "train":
                if content_key(ex) in prev_keys:
                    continue  # previous training data: it comes back only as rehearsal
                fresh.append(ex)
            elif split == "validation":
                validation.append(ex)
            else:
                test.append(ex)
    held = {h for ex in new_slice if (h := _input(ex))}
    for bucket, reason in ((fresh, "new_slice_input:new"), (fixes, "new_slice_input:correction"),
                           (validation, "new_slice_input:validation")):
        kept = [ex for ex in bucket if _input(ex) not in held]
        excluded[reason] = len(bucket) - len(kept)
        bucket[:] = kept
    new = fresh + fixes
    if not new:
        raise TunesmithError(
            f"nothing new to train on: the corrections ({corrections.records} records, {corrections.held_out} held "
            f"out as the new slice) and the sources add no example that the previous training split lacks; "
            f"review more answers, export again, or pass --add FILE")
    validated = {h for ex in validation if (h := _input(ex))}  # early stopping must not see trained inputs
    rehearsal, superseded = _rehearsal(cfg, prev_train, new, frozen_hashes | held | validated)
    excluded["rehearsal_superseded"] = superseded
    excluded = {k: v for k, v in excluded.items() if v}
    for part, examples in (("new", fresh), ("correction", fixes), ("rehearsal", rehearsal)):
        for ex in examples:
            ex.meta[MIX_KEY] = part
    train = fresh + fixes + rehearsal
    achieved = len(rehearsal) / len(train)
    counts = {"new": len(fresh), "correction": len(fixes), "rehearsal": len(rehearsal),
              "train": len(train), "validation": len(validation), "test": len(test), "new_slice": len(new_slice),
              "previous_train": len(prev_train)}
    mix_info = {"snapshot": snapshot, "previous_snapshot": previous, "export": corrections.export_id,
                "rehearsal_ratio": cfg.retrain.rehearsal_ratio, "achieved_ratio": round(achieved, 4),
                "new_slice_share": cfg.retrain.new_slice_share, "seed": cfg.seed, "counts": counts,
                "excluded": excluded, "replaced_sources": replaced}
    mix_id = _publish(ws, snapshot_dir, {"train": train, "validation": validation, "test": test}, mix_info)
    return DataMix(snapshot, mix_id, previous, counts, excluded, cfg.retrain.rehearsal_ratio, achieved, replaced,
                   new_slice)


def _rehearsal(cfg: Config, prev_train: list[Example], new: list[Example],
               forbidden: set[str] | frozenset[str]) -> tuple[list[Example], int]:
    """A seeded sample of the previous training split, ``ratio`` of the mix (as many as there are
    when fewer). Left out first: ``forbidden`` inputs (frozen-pack cases, held-out corrections,
    the new validation split), and inputs the new data answers again (the new answer supersedes
    the old)."""
    ratio = cfg.retrain.rehearsal_ratio
    renewed = {h for ex in new if (h := _input(ex))}
    already = {content_key(ex) for ex in new}  # e.g. last round's corrections, exported again
    pool, superseded = [], 0
    for ex in prev_train:
        h = _input(ex)
        if h in forbidden or content_key(ex) in already:
            continue
        if h in renewed:
            superseded += 1
            continue
        pool.append(ex)
    want = round(ratio / (1 - ratio) * len(new)) if ratio > 0 else 0
    k = min(want, len(pool))
    picked = sorted(random.Random(cfg.seed).sample(range(len(pool)), k))
    return [Example(pool[i].id, pool[i].messages, pool[i].text, dict(pool[i].meta)) for i in picked], superseded


def _publish(ws: Workspace, snapshot_dir: Path, splits: dict[str, list[Example]], info: dict[str, Any]) -> str:
    digest = hashlib.sha256(dumps(info).encode())
    for split in SPLITS:
        for ex in splits[split]:
            digest.update(f"{split}\x1f{dumps(ex.to_dict())}\n".encode())
    mix_id = digest.hexdigest()[:20]
    if ws.artifact_dir("snapshot", mix_id).exists():
        return mix_id
    source_manifest = orjson.loads((snapshot_dir / "manifest.json").read_bytes())
    counts = dict(source_manifest.get("counts") or {})
    # what training reads: the mix's splits (the prepared snapshot, a lineage parent, keeps the
    # record-by-record accounting of the sources; rehearsed examples were not read from them)
    counts["splits"] = {s: len(splits[s]) for s in SPLITS}
    counts["kept"] = sum(counts["splits"].values())
    counts["mix"] = info["counts"]
    manifest = {**source_manifest, "kind": "tunesmith.snapshot", "snapshot_id": mix_id, "counts": counts,
                MIX_KEY: info}
    parents = [("snapshot", info["snapshot"], "mixed_from"), ("snapshot", info["previous_snapshot"], "rehearsal_from")]
    if info.get("export"):
        parents.append(("reviewset", info["export"], "corrections_from"))
    with ws.staging() as staging:
        for split in SPLITS:
            pq.write_table(to_table(splits[split]), staging / f"{split}.parquet")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
        (staging / "quarantine.jsonl").write_text("")
        ws.publish(staging, "snapshot", mix_id, parents=parents,
                   meta={"counts": counts, "config_hash": manifest.get("config_hash"), "input_key": f"retrain:{mix_id}",
                         MIX_KEY: {k: info[k] for k in ("snapshot", "previous_snapshot", "rehearsal_ratio",
                                                         "achieved_ratio")}})
    return mix_id
