"""The per-record stages as ONE pure function over Arrow batches: normalise -> filter -> PII.

``process_batch`` is what every executor runs (a local process pool, Ray Data): Arrow in,
Arrow out, no shared state, so the same input gives the same output wherever it runs. Dropped
records stay in the output as rows with a ``status`` (``"<stage>:<reason>"``), so nothing is
lost between the worker and the driver. Kept rows carry what the global stages need: the
exact-dedup key and the MinHash signature, computed here in parallel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import xxhash

from tunesmith.config import DataConfig, NearDedupConfig
from tunesmith.data.arrow import EXAMPLE_SCHEMA, dumps, from_table
from tunesmith.data.example import Example
from tunesmith.data.filters import QualityFilter
from tunesmith.data.minhash import signatures
from tunesmith.data.normalise import build_normaliser

KEPT = "kept"


def output_schema(num_perm: int) -> pa.Schema:
    return EXAMPLE_SCHEMA.append(pa.field("status", pa.string())).append(
        pa.field("changed", pa.string())  # JSON: {"normalise": 1, "pii:EMAIL": 2}
    ).append(pa.field("dedup_key", pa.binary(16))).append(
        pa.field("signature", pa.list_(pa.uint32(), num_perm))
    )


def dedup_text(ex: Example) -> str:
    """What near-dedup and contamination compare: what a person wrote (user turns or raw
    text). The system prompt is shared by every record and would make short ones look alike."""
    if not ex.is_chat:
        return ex.text or ""
    return "\n".join(m["content"] for m in ex.messages if m["role"] == "user")


def exact_key(ex: Example) -> bytes:
    """128-bit hash of every turn (roles included): equal keys = the same record."""
    h = xxhash.xxh3_128()
    for m in ex.messages:
        h.update(m["role"].encode() + b"\x1f" + m["content"].encode() + b"\x1e")
    if ex.text is not None:
        h.update(b"text\x1f" + ex.text.encode())
    return h.digest()


@dataclass
class _Stages:
    normalise: object
    quality: QualityFilter
    pii: object | None
    pii_roles: frozenset[str]
    near: NearDedupConfig | None
    num_perm: int


@lru_cache(maxsize=4)
def _build(cfg_json: str, salt: str) -> _Stages:
    # Built once per worker process and config (workers receive the config as JSON).
    cfg = DataConfig.model_validate_json(cfg_json)
    pii = None
    if cfg.pii.enabled:
        from tunesmith.data.pii import PiiScrubber

        pii = PiiScrubber(cfg.pii, salt=salt)
    near = cfg.dedup.near if cfg.dedup.near.enabled else None
    return _Stages(
        build_normaliser(cfg.normalise), QualityFilter(cfg.filters), pii,
        frozenset(cfg.pii.roles), near, cfg.dedup.near.num_perm,
    )


Shaper = Callable[[list[dict[str, str]]], list[dict[str, str]]]


def message_shaper(cfg: DataConfig, salt: str) -> Shaper:
    """What prepare does to a record's text, for messages that never went through prepare
    (served requests, batch prediction, extra eval cases): each turn normalised, then PII
    scrubbed in ``pii.roles`` (with the workspace's salt: the snapshot's pseudonyms). The
    quality filters and dedup do not apply to a single request."""
    st = _build(cfg.model_dump_json(), salt)

    def shape(messages: list[dict[str, str]]) -> list[dict[str, str]]:
        texts = [st.normalise(m["content"]) for m in messages]  # type: ignore[operator]
        texts, _ = _scrub(st, [m["role"] for m in messages], texts)
        return [{**m, "content": t} for m, t in zip(messages, texts, strict=True)]

    return shape


def _scrub(st: _Stages, roles: list[str], texts: list[str]) -> tuple[list[str], Counter]:
    """``texts`` with PII scrubbed in the turns whose role is in ``pii.roles``, and the counts."""
    counts: Counter = Counter()
    if st.pii is None:
        return texts, counts
    out = []
    for role, text in zip(roles, texts, strict=True):
        if role in st.pii_roles:
            text, found = st.pii.scrub(text)  # type: ignore[attr-defined]
            counts.update({f"pii:{k}": v for k, v in found.items()})
        out.append(text)
    return out, counts


def _process_one(ex: Example, st: _Stages) -> tuple[Example, str, Counter]:
    changed: Counter = Counter()
    originals = ex.contents()
    normalised = [st.normalise(t) for t in originals]  # type: ignore[operator]
    if normalised != originals:
        changed["normalise"] = 1
        ex = ex.with_contents(normalised)
    reason = st.quality.check(ex)
    if reason:
        return ex, f"filter:{reason}", changed
    if st.pii is not None:
        roles = [m["role"] for m in ex.messages] if ex.is_chat else ["text"]
        scrubbed, counts = _scrub(st, roles, ex.contents())
        changed.update(counts)
        ex = ex.with_contents(scrubbed)
    return ex, KEPT, changed


def process_batch(table: pa.Table, cfg_json: str, salt: str) -> pa.Table:
    """Run normalise -> quality filter -> PII scrub on a batch; add dedup keys + signatures."""
    st = _build(cfg_json, salt)
    results = [_process_one(ex, st) for ex in from_table(table)]
    kept_idx = [i for i, (_, status, _) in enumerate(results) if status == KEPT]
    sigs = np.zeros((len(results), st.num_perm), dtype=np.uint32)
    if kept_idx and st.near is not None:
        sigs[kept_idx] = signatures([dedup_text(results[i][0]) for i in kept_idx], st.near)
    return _to_output(results, sigs, st.num_perm)


def _to_output(results: list[tuple[Example, str, Counter]], sigs: np.ndarray, num_perm: int) -> pa.Table:
    cols: dict[str, list] = {k: [] for k in ("id", "messages", "text", "meta", "status", "changed", "dedup_key")}
    for ex, status, changed in results:
        kept = status == KEPT
        cols["id"].append(ex.id)
        # Dropped rows keep id + meta (for the drop log) but not their text.
        cols["messages"].append(ex.messages if kept else None)
        cols["text"].append(ex.text if kept else None)
        cols["meta"].append(dumps(ex.meta))
        cols["status"].append(status)
        cols["changed"].append(dumps(dict(changed)) if changed else None)
        cols["dedup_key"].append(exact_key(ex) if kept else None)
    flat = pa.array(sigs.reshape(-1), type=pa.uint32())
    cols_arrays = [pa.array(cols[k], type=output_schema(num_perm).field(k).type) for k in cols]
    cols_arrays.append(pa.FixedSizeListArray.from_arrays(flat, num_perm))
    return pa.Table.from_arrays(cols_arrays, schema=output_schema(num_perm))
