"""The reviewed corrections a retrain learns from: find the export, re-check it against the
frozen eval pack, and decide (by a hash of each record's input) which ones are held out as the
new-slice eval pack.

Why a hash of the input and not a random draw: exports are cumulative (every decision so far),
so the same item reappears in the next export. Deciding its side from its own input keeps it on
that side in every later retrain; a random split would move held-out items into training and
make the next new-slice comparison a test on training data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import Config
from tunesmith.errors import TunesmithError
from tunesmith.review.answers import input_hash
from tunesmith.workspace import Workspace, write_atomic

REVIEWSET = "reviewset"  # the artifact kind review/export.py publishes
SLICE_KEY = "retrain_slice"  # meta key set on each record: "train" or "new_slice"
HOW_TO_EXPORT = ("make one with `tunesmith review export -c PROJECT` once reviewers have approved or corrected "
                 "answers (`tunesmith review list`)")


@dataclass(frozen=True)
class Corrections:
    """The export a retrain reads, split into the part trained on and the held-out new slice."""

    export_id: str | None  # the reviewset artifact id, when it came from the workspace
    path: Path  # the export file read
    records: int  # records in the export
    held_out: int  # records marked new_slice
    overlap_frozen: list[str] = field(default_factory=list)  # input hashes also in the frozen pack (left out)
    tagged: Path | None = None  # the copy prepare reads, each record tagged with its side

    def to_dict(self) -> dict[str, Any]:
        return {"export": self.export_id, "path": str(self.path), "records": self.records,
                "held_out": self.held_out, "trained": self.records - self.held_out - len(self.overlap_frozen),
                "overlap_frozen_pack": len(self.overlap_frozen)}


def find_export(cfg: Config, ws: Workspace) -> tuple[str | None, Path]:
    """``retrain.corrections`` when set, else the latest reviewed export of the workspace.

    Raises:
        TunesmithError: none configured and none exported, or the configured file is missing.
    """
    if cfg.retrain.corrections:
        path = cfg.resolve(cfg.retrain.corrections)
        if not path.is_file():
            raise TunesmithError(f"retrain.corrections: {path} does not exist; {HOW_TO_EXPORT}")
        return None, path
    latest = ws.latest(REVIEWSET)
    if latest is None:
        raise TunesmithError(f"no reviewed-corrections export in {ws.root}: {HOW_TO_EXPORT}")
    return latest.id, latest.path / "reviewed.jsonl"


def is_review_export(path: Path) -> bool:
    """A file whose first record carries review provenance (``meta.review_item``): an export
    written by ``review export --out`` into the project's sources."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
        meta = json.loads(first).get("meta") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and "review_item" in meta and "review_decision" in meta


def held_out(messages: list[dict[str, Any]], share: float) -> bool:
    """True for the ``share`` of inputs (by a salted hash of the normalised user turns) that form
    the new slice."""
    digest = hashlib.sha256(("tunesmith-new-slice\x1f" + input_hash(messages)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise TunesmithError(f"{path} line {n}: not JSON ({exc}); is it a `tunesmith review export`?") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
            raise TunesmithError(f"{path} line {n}: expected a chat record with `messages` (the review export format)")
        records.append(rec)
    if not records:
        raise TunesmithError(f"{path} holds no records; {HOW_TO_EXPORT}")
    return records


def tag_corrections(cfg: Config, ws: Workspace, frozen_hashes: frozenset[str], out_dir: Path) -> Corrections:
    """Read the export, leave out records whose input is a frozen-pack case (the export refuses
    those already; an export written elsewhere or edited by hand may not), mark each remaining
    record ``meta.retrain_slice`` = ``new_slice`` or ``train``, and write the tagged copy that
    ``prepare`` ingests (content-named, so the same export gives the same file and snapshot)."""
    export_id, path = find_export(cfg, ws)
    records = read_records(path)
    share = cfg.retrain.new_slice_share
    overlap, lines, n_held = [], [], 0
    for rec in records:
        h = input_hash(rec["messages"])
        if h in frozen_hashes:
            overlap.append(h)
            continue
        side = "new_slice" if held_out(rec["messages"], share) else "train"
        n_held += side == "new_slice"
        meta = dict(rec.get("meta") or {})
        meta[SLICE_KEY] = side
        lines.append(json.dumps({**rec, "meta": meta}, ensure_ascii=False, sort_keys=True))
    if not lines:
        raise TunesmithError(f"every one of the {len(records)} records in {path} has the input of a frozen eval-pack "
                             "case: nothing is left to train on or to hold out; re-export with --drop-overlap")
    body = "".join(line + "\n" for line in lines)
    name = hashlib.sha256(body.encode()).hexdigest()[:16]
    tagged = out_dir / f"corrections-{name}.jsonl"
    if not tagged.exists():
        write_atomic(tagged, body)
    return Corrections(export_id, path, len(records), n_held, overlap, tagged)
