"""Reviewer decisions → a versioned training dataset that ``prepare`` reads as a source.

Every decided item counts once, by its latest decision (any reviewer): approved answers as the
model gave them, corrected ones with the reviewer's values, rejected ones left out (and
counted). Each record is an OpenAI-chat JSONL line (``{"messages": [...], "meta": {...}}``,
the ``chat`` format of ``data/ingest``; ingest keeps ``meta``) whose meta is its provenance:
item, request id, answer index, model version, reviewer, action, decision id and time, tier.

The export is cumulative (all decisions so far) and content-addressed: the same decisions give
the same dataset id, a new decision a new one. Publish it under
``artifacts/reviewset/<id>/reviewed.jsonl`` with lineage rows to the eval packs it was checked
against and the model versions whose answers it holds; ``out`` also writes it to a fixed path
(the one ``data.sources`` names), replaced atomically by each export, so a project never reads
two exports of the same items.

Nothing may overlap the frozen eval pack: an item whose normalised user turns equal a pack
case's (:func:`tunesmith.review.answers.input_hash`) makes the export refuse, naming the items,
unless ``drop_overlap`` leaves them out (and reports them).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.review import answers as ans
from tunesmith.review.queue import ReviewItem, ReviewQueue, final_decision
from tunesmith.workspace import Workspace, write_atomic

KIND = "reviewset"
FILENAME = "reviewed.jsonl"


@dataclass(frozen=True)
class PackHashes:
    """The input hashes of one eval pack's cases."""

    pack_id: str
    hashes: frozenset[str]


@dataclass(frozen=True)
class ExportResult:
    id: str
    path: Path  # the JSONL in the workspace
    records: int
    approved: int
    corrected: int
    rejected: int  # decided items left out because their latest decision rejects them
    pending: int  # items nobody decided yet (not exported)
    overlap: list[int]  # items whose input is an eval-pack case (left out with drop_overlap)
    packs: list[str]  # eval packs checked
    reviewers: dict[str, int]  # records per reviewer of the counted decision
    new: bool  # False: the same decisions were exported before (same id)
    copied_to: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": str(self.path), "records": self.records, "approved": self.approved,
                "corrected": self.corrected, "rejected": self.rejected, "pending": self.pending,
                "overlap": self.overlap, "packs": self.packs, "reviewers": self.reviewers, "new": self.new,
                "copied_to": None if self.copied_to is None else str(self.copied_to)}


def pack_hashes(ws: Workspace, pinned: str | None = None) -> list[PackHashes]:
    """The frozen eval pack's input hashes: the pinned pack (``eval.pack``), else every pack of
    the workspace (any of them may be the one a version is gated on)."""
    from tunesmith.evaluate.pack import PACK_KIND, load_pack

    ids = [pinned] if pinned else [a.id for a in ws.list(PACK_KIND)]
    out = []
    for pack_id in ids:
        pack = load_pack(ws, pack_id)
        out.append(PackHashes(pack.id, frozenset(ans.input_hash(c.messages) for c in pack.cases)))
    return out


def record_for(item: ReviewItem) -> dict[str, Any] | None:
    """The training record of an item by its latest decision; None when rejected or pending."""
    decision = final_decision(item)
    if decision is None or decision.action == "reject":
        return None
    values = item.values_after(decision)
    answer = item.answer if decision.action == "approve" else ans.corrected_answer(
        item.kind, item.answer, list(item.fields), values)
    meta = {"review_item": item.item, "request_id": item.request_id, "choice": item.choice,
            "model_version": item.model_version, "reviewer": decision.by, "review_action": decision.action,
            "review_decision": decision.id, "decided_at": decision.at, "review_tier": item.tier}
    if decision.action == "correct":
        meta["corrected_fields"] = sorted(decision.changes)
    return {"messages": [*item.input, {"role": "assistant", "content": answer}], "meta": meta}


def export_reviewed(ws: Workspace, *, packs: list[PackHashes], drop_overlap: bool = False,
                    out: Path | None = None) -> ExportResult:
    """Write the dataset of approved and corrected answers (see the module docstring).

    Raises:
        TunesmithError: nothing to export, or items overlap the eval pack and ``drop_overlap``
            is off (nothing is written then).
    """
    items = ReviewQueue(ws.db_path).items()
    pack_of = {h: p.pack_id for p in packs for h in p.hashes}
    overlap = [it.item for it in items if it.decisions and it.input_hash in pack_of]
    if overlap and not drop_overlap:
        shown = ", ".join(map(str, overlap[:20])) + (" ..." if len(overlap) > 20 else "")
        raise TunesmithError(
            f"{len(overlap)} reviewed item(s) have the input of an eval-pack case (items {shown}; pack "
            f"{pack_of[next(it.input_hash for it in items if it.item == overlap[0])]}): training on them would "
            "inflate every later eval. Nothing was written; pass --drop-overlap to export without them")
    records, counts, reviewers = [], Counter[str](), Counter[str]()
    for it in items:
        decision = final_decision(it)
        if decision is None:
            counts["pending"] += 1
            continue
        if it.item in overlap:
            continue
        rec = record_for(it)
        if rec is None:
            counts["rejected"] += 1
            continue
        counts[decision.action] += 1
        reviewers[decision.by] += 1
        records.append(rec)
    if not records:
        raise TunesmithError(f"nothing to export: {counts['pending']} item(s) pending, {counts['rejected']} "
                             f"rejected, {len(overlap)} overlapping the eval pack; approve or correct items first "
                             "(`tunesmith review list`)")
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    dataset_id = hashlib.sha256(body.encode()).hexdigest()[:16]
    manifest = {"id": dataset_id, "records": len(records), "approved": counts["approve"],
                "corrected": counts["correct"], "rejected": counts["rejected"], "pending": counts["pending"],
                "overlap_dropped": overlap, "packs_checked": [p.pack_id for p in packs],
                "reviewers": dict(reviewers), "format": "chat"}
    new = not ws.artifact_dir(KIND, dataset_id).exists()
    if new:
        versions = sorted({it.model_version for it in items if it.model_version and it.decisions})
        parents = [("evalpack", p.pack_id, "checked_against") for p in packs]
        parents += [("model", v, "answers_of") for v in versions if v != "base"]
        with ws.staging() as staging:
            (staging / FILENAME).write_text(body, encoding="utf-8")
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            ws.publish(staging, KIND, dataset_id, meta={k: manifest[k] for k in (
                "records", "approved", "corrected", "rejected", "packs_checked")}, parents=parents)
    path = ws.artifact_dir(KIND, dataset_id) / FILENAME
    if out is not None:
        write_atomic(out, body)
    return ExportResult(dataset_id, path, len(records), counts["approve"], counts["correct"], counts["rejected"],
                        counts["pending"], overlap, [p.pack_id for p in packs], dict(reviewers), new, out, manifest)
