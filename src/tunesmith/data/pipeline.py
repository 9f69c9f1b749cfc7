"""``prepare``: sources -> immutable dataset snapshot, with every record accounted for.

    1. ingest      files -> Examples (bad records -> quarantine, with file/line/error)
    2. per record  normalise -> quality filters -> PII scrub        (parallel: stages.py)
    3. exact dedup 128-bit hash of every turn; first occurrence kept
    4. near dedup  MinHash LSH over user text; the first record of each cluster kept
    5. split       by group (group key / cluster), seeded, ratios by record count
    6. contamination check (test vs train n-gram overlap), snapshot files, manifest, report

Survivors of steps 1-4 are spooled to a Parquet file in the staging folder, so memory holds
keys and signatures, not texts. ``read == kept + dropped + quarantined`` is checked at the end.
"""

from __future__ import annotations

import hashlib
import platform
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from tunesmith import __version__
from tunesmith.config import Config
from tunesmith.data import executors
from tunesmith.data.arrow import EXAMPLE_SCHEMA, dumps, from_table, to_table
from tunesmith.data.example import Example
from tunesmith.data.ingest import Quarantined, expand_source, file_sha256, read_source
from tunesmith.data.minhash import NearDuplicateIndex
from tunesmith.data.split import SPLITS, assign_splits, ngram_hashes, overlap_fractions
from tunesmith.data.stages import KEPT, Shaper, dedup_text, message_shaper, process_batch
from tunesmith.errors import AccountingError, TunesmithError
from tunesmith.workspace import Workspace, write_atomic

DROP_SCHEMA = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("stage", pa.string()),
     ("reason", pa.string()), ("duplicate_of", pa.string())]
)
CONTAMINATION_SAMPLE_TARGET = 16_000_000  # train n-gram hashes kept in memory, at most


class Progress:
    """What the pipeline tells its caller; the CLI subclasses it with rich progress bars."""

    def start(self, stage: str, total: int | None = None) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def finish(self) -> None: ...


@dataclass
class Accounting:
    read: int = 0
    quarantined: int = 0
    dropped: Counter = field(default_factory=Counter)  # "stage:reason" -> n
    changed: Counter = field(default_factory=Counter)  # "normalise" / "pii:EMAIL" -> n
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    per_source: dict[str, Counter] = field(default_factory=dict)

    def check(self) -> None:
        kept, dropped = sum(self.kept.values()), sum(self.dropped.values())
        if self.read != kept + dropped + self.quarantined:
            raise AccountingError(
                f"accounting mismatch: read {self.read} != kept {kept} + dropped {dropped} "
                f"+ quarantined {self.quarantined}. This is a tunesmith bug; please report it."
            )


@dataclass
class PrepareResult:
    snapshot_id: str | None
    path: Path | None
    accounting: Accounting
    manifest: dict[str, Any]
    reused: bool = False
    samples: dict[str, list[dict]] = field(default_factory=dict)  # dry run: examples per outcome


# ---------------------------------------------------------------------------- 1. ingest
def _iter_records(cfg: Config, acc: Accounting, limit: int | None) -> Iterator[Example | Quarantined]:
    n = 0
    for src in cfg.data.sources:
        for path in expand_source(src, cfg.base_dir):
            for rec in read_source(src, path, base_dir=cfg.base_dir, max_line_bytes=cfg.data.max_line_bytes):
                acc.read += 1
                yield rec
                n += 1
                if limit is not None and n >= limit:
                    return


def _batches(records: Iterator[Example | Quarantined], size: int, quarantine: list[Quarantined]) -> Iterator[pa.Table]:
    batch: list[Example] = []
    for rec in records:
        if isinstance(rec, Quarantined):
            quarantine.append(rec)
            continue
        batch.append(rec)
        if len(batch) >= size:
            yield to_table(batch)
            batch = []
    if batch:
        yield to_table(batch)


# ---------------------------------------------------------------------------- 2-4. clean + dedup
class _Deduper:
    """Exact dedup in the driver (a dict of 16-byte keys) and the near-dup index."""

    def __init__(self, cfg: Config):
        self.exact = cfg.data.dedup.exact
        self.near = NearDuplicateIndex(cfg.data.dedup.near) if cfg.data.dedup.near.enabled else None
        self.seen: dict[bytes, str] = {}
        self.ids: list[str] = []
        self.groups: list[str] = []
        self.sources: list[str] = []

    def admit(self, table: pa.Table) -> tuple[pa.Table, list[tuple[str, str]]]:
        """Rows of a processed batch that survive exact dedup, and (id, duplicate_of) of the rest."""
        keys = table.column("dedup_key").to_pylist()
        ids = table.column("id").to_pylist()
        mask, dups = [], []
        for rid, key in zip(ids, keys, strict=True):
            first = self.seen.get(key) if self.exact else None
            if first is not None:
                dups.append((rid, first))
                mask.append(False)
            else:
                if self.exact:
                    self.seen[key] = rid
                mask.append(True)
        kept = table.filter(pa.array(mask, type=pa.bool_()))
        if self.near is not None and kept.num_rows:
            sig = kept.column("signature").combine_chunks()
            width = sig.type.list_size
            self.near.add(sig.values.to_numpy(zero_copy_only=False).reshape(-1, width))
        self.ids.extend(kept.column("id").to_pylist())
        for meta in map(orjson.loads, kept.column("meta").to_pylist()):
            self.groups.append(str(meta.get("group") or ""))
            self.sources.append(str(meta.get("source", "")))
        return kept, dups


def _clean_and_dedup(
    cfg: Config, staging: Path, acc: Accounting, drops: pq.ParquetWriter, quarantine: list[Quarantined],
    progress: Progress, executor: str, limit: int | None, samples: dict | None,
) -> _Deduper:
    cfg_json = cfg.data.model_dump_json()
    salt = _salt(cfg)
    deduper = _Deduper(cfg)
    survivors = pq.ParquetWriter(staging / "survivors.parquet", EXAMPLE_SCHEMA)
    progress.start("clean + exact dedup")
    batches = _batches(_iter_records(cfg, acc, limit), cfg.data.batch_size, quarantine)
    for out in executors.run(batches, process_batch, cfg_json, salt, executor=executor, workers=cfg.data.workers):
        _tally(out, acc, drops, samples)
        kept_rows = out.filter(pa.compute.equal(out.column("status"), KEPT))
        kept, dups = deduper.admit(kept_rows)
        _write_drops(drops, [(i, "exact_dedup", "duplicate", d) for i, d in dups], out)
        acc.dropped.update({"exact_dedup:duplicate": len(dups)})
        if samples is not None:
            _sample(samples, "exact_dedup:duplicate", [{"id": i, "duplicate_of": d} for i, d in dups])
        survivors.write_table(kept.select(EXAMPLE_SCHEMA.names).cast(EXAMPLE_SCHEMA))
        progress.advance(out.num_rows)
    survivors.close()
    progress.finish()
    return deduper


def _tally(out: pa.Table, acc: Accounting, drops: pq.ParquetWriter, samples: dict | None) -> None:
    statuses = out.column("status").to_pylist()
    for changed in out.column("changed").to_pylist():
        if changed:
            acc.changed.update(orjson.loads(changed))
    dropped = [(rid, *s.split(":", 1), None) for rid, s in zip(out.column("id").to_pylist(), statuses, strict=True) if s != KEPT]
    acc.dropped.update(f"{stage}:{reason}" for _, stage, reason, _ in dropped)
    _write_drops(drops, dropped, out)
    if samples is not None:
        for rid, stage, reason, _ in dropped[:50]:
            _sample(samples, f"{stage}:{reason}", [{"id": rid}])


def _write_drops(writer: pq.ParquetWriter, rows: list[tuple], out: pa.Table) -> None:
    if not rows:
        return
    source = {r: orjson.loads(m).get("source", "") for r, m in zip(out.column("id").to_pylist(), out.column("meta").to_pylist(), strict=True)}
    cols = list(zip(*[(r[0], source.get(r[0], ""), r[1], r[2], r[3]) for r in rows], strict=True))
    writer.write_table(pa.table([list(c) for c in cols], schema=DROP_SCHEMA))


def _sample(samples: dict, key: str, items: list[dict]) -> None:
    bucket = samples.setdefault(key, [])
    bucket.extend(items[: max(0, 5 - len(bucket))])


def _salt(cfg: Config) -> str:
    """Pseudonym salt: a per-workspace secret (so pseudonyms can't be reversed by hashing
    guesses with a public seed), stable across runs so snapshot ids stay reproducible."""
    path = cfg.workspace_dir / "secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def input_shaper(cfg: Config) -> Shaper | None:
    """``serve.shape_inputs``: the project's prepare normalisation and PII scrubbing for
    messages the model sees without going through prepare; None when switched off."""
    return message_shaper(cfg.data, _salt(cfg)) if cfg.serve.shape_inputs else None


def shape_example(ex: Example, shape: Shaper) -> Example:
    """``ex`` with its turns (or its text, as role ``text``) shaped."""
    turns = ex.messages if ex.is_chat else [{"role": "text", "content": ex.text or ""}]
    return ex.with_contents([m["content"] for m in shape(turns)])


# ---------------------------------------------------------------------------- 4-6. near dedup, split, write
@dataclass
class _Written:
    content_hash: str
    lengths: dict[str, list[int]]
    cluster_sizes: list[int]
    contaminated: list[dict[str, Any]]


def _near_dedup(deduper: _Deduper, acc: Accounting, drops: pq.ParquetWriter, samples: dict | None) -> np.ndarray:
    n = len(deduper.ids)
    reps = deduper.near.clusters() if deduper.near is not None else np.arange(n)
    dup_idx = np.flatnonzero(reps != np.arange(n))
    rows = [(deduper.ids[i], deduper.sources[i], "near_dedup", "near_duplicate", deduper.ids[reps[i]]) for i in dup_idx]
    if rows:
        cols = list(zip(*rows, strict=True))
        drops.write_table(pa.table([list(c) for c in cols], schema=DROP_SCHEMA))
    acc.dropped["near_dedup:near_duplicate"] += len(rows)
    if samples is not None:
        _sample(samples, "near_dedup:near_duplicate", [{"id": r[0], "duplicate_of": r[4]} for r in rows])
    return reps


def _split_and_write(cfg: Config, staging: Path, deduper: _Deduper, reps: np.ndarray, acc: Accounting,
                     progress: Progress) -> _Written:
    n = len(deduper.ids)
    is_rep = reps == np.arange(n)
    cluster_size = np.bincount(reps, minlength=n)
    rep_idx = np.flatnonzero(is_rep)
    groups = [deduper.groups[i] or f"id:{deduper.ids[i]}" for i in rep_idx]
    split_of = np.full(n, -1, dtype=np.int8)
    split_of[rep_idx] = assign_splits(groups, cfg.data.split, cfg.seed) if len(rep_idx) else []

    ccfg = cfg.data.split.contamination
    sample_mod = max(1, (n * 100) // CONTAMINATION_SAMPLE_TARGET)
    writers = {s: pq.ParquetWriter(staging / f"{s}.parquet", EXAMPLE_SCHEMA) for s in SPLITS}
    digest = hashlib.sha256()
    lengths: dict[str, list[int]] = {s: [] for s in SPLITS}
    train_hashes: list[np.ndarray] = []
    test_hashes: list[tuple[str, np.ndarray]] = []
    progress.start("near dedup + split + write", total=n)
    offset = 0
    for batch in pq.ParquetFile(staging / "survivors.parquet").iter_batches(batch_size=cfg.data.batch_size):
        examples = from_table(batch)
        per_split: dict[str, list[Example]] = {s: [] for s in SPLITS}
        for j, ex in enumerate(examples):
            i = offset + j
            if not is_rep[i]:
                continue
            split = SPLITS[split_of[i]]
            ex.meta["split"] = split
            ex.meta["cluster_id"] = ex.id
            ex.meta["cluster_size"] = int(cluster_size[i])
            per_split[split].append(ex)
            lengths[split].append(len(dedup_text(ex)))
        # n-gram hashes for the contamination check, one vectorised call per split and batch
        train_hashes += ngram_hashes([dedup_text(e) for e in per_split["train"]], ccfg.ngram, sample_mod)
        test_ex = per_split["test"]
        test_hashes += zip([e.id for e in test_ex],
                           ngram_hashes([dedup_text(e) for e in test_ex], ccfg.ngram, sample_mod), strict=True)
        for split, exs in per_split.items():
            if exs:
                writers[split].write_table(to_table(exs))
                acc.kept[split] += len(exs)
        offset += batch.num_rows
        progress.advance(batch.num_rows)
    for w in writers.values():
        w.close()
    progress.finish()
    # The id covers the examples in their final form and order, split by split.
    for split in SPLITS:
        for ex_batch in pq.ParquetFile(staging / f"{split}.parquet").iter_batches():
            for row in ex_batch.to_pylist():
                digest.update(f"{split}\x1f{dumps(row)}\n".encode())
    contaminated = _contamination(train_hashes, test_hashes, ccfg.threshold)
    sizes = cluster_size[rep_idx].tolist()
    return _Written(digest.hexdigest(), lengths, sizes, contaminated)


def _contamination(train: list[np.ndarray], test: list[tuple[str, np.ndarray]], threshold: float) -> list[dict]:
    if not train or not test:
        return []
    fractions = overlap_fractions([h for _, h in test], np.concatenate(train))
    hits = [{"id": rid, "overlap": round(float(f), 3)} for (rid, _), f in zip(test, fractions, strict=True) if f > threshold]
    return sorted(hits, key=lambda h: -h["overlap"])


# ---------------------------------------------------------------------------- the stage
def prepare(
    cfg: Config,
    *,
    dry_run: bool = False,
    dry_run_records: int = 500,
    executor: executors.ExecutorName = "local",
    progress: Progress | None = None,
) -> PrepareResult:
    """Build (or reuse) the dataset snapshot described by ``cfg``.

    Args:
        cfg: the loaded config (``load_config``).
        dry_run: process only the first ``dry_run_records`` records and write nothing but
            return counts and sample drops, to preview what the config does.
        executor: ``local`` (process pool of ``data.workers``) or ``ray`` (Ray Data).
        progress: receives per-stage progress (the CLI shows bars).

    Returns:
        A PrepareResult with the snapshot id, its folder and the accounting.

    Raises:
        TunesmithError: a source path matches no file, or the workspace is unusable.
        AccountingError: a record went missing (a bug; never silently).
    """
    progress = progress or Progress()
    ws = Workspace(cfg.workspace_dir)
    run_id = None if dry_run else ws.start_run("prepare", cfg.hash())
    started = time.time()
    try:
        result = _prepare(cfg, ws, run_id, dry_run, dry_run_records, executor, progress, started)
    except BaseException as exc:
        if run_id:
            ws.finish_run(run_id, "failed", {"error": str(exc)[:2000]})
        raise
    if run_id:
        ws.finish_run(run_id, "ok", {"snapshot": result.snapshot_id, "reused": result.reused})
    return result


def _prepare(cfg: Config, ws: Workspace, run_id: str | None, dry_run: bool, dry_run_records: int,
             executor: str, progress: Progress, started: float) -> PrepareResult:
    acc = Accounting()
    quarantine: list[Quarantined] = []
    samples: dict | None = {} if dry_run else None
    limit = dry_run_records if dry_run else None
    sources = _source_hashes(cfg)
    key = input_key(cfg, sources)
    if not dry_run and (done := _existing(ws, key)) is not None:
        return done
    with ws.staging() as staging:
        drops = pq.ParquetWriter(staging / "drops.parquet", DROP_SCHEMA)
        deduper = _clean_and_dedup(cfg, staging, acc, drops, quarantine, progress, executor, limit, samples)
        acc.quarantined = len(quarantine)
        reps = _near_dedup(deduper, acc, drops, samples)
        drops.close()
        written = _split_and_write(cfg, staging, deduper, reps, acc, progress)
        acc.check()
        manifest = _manifest(cfg, acc, sources, written, started)
        snapshot_id = hashlib.sha256(
            (written.content_hash + dumps(_identity(manifest))).encode()
        ).hexdigest()[:20]
        manifest["snapshot_id"] = snapshot_id
        if dry_run:
            if samples is not None:
                samples["quarantine"] = [_quarantine_row(q) for q in quarantine[:5]]
            return PrepareResult(None, None, acc, manifest, samples=samples or {})
        existing = ws.artifact_dir("snapshot", snapshot_id)
        if existing.exists():
            return PrepareResult(snapshot_id, existing, acc, manifest, reused=True)
        _write_side_files(staging, manifest, quarantine, written)
        artifact = ws.publish(  # renames the staging folder into place
            staging, "snapshot", snapshot_id, run_id=run_id,
            meta={"counts": manifest["counts"], "config_hash": manifest["config_hash"], "input_key": key},
        )
    return PrepareResult(snapshot_id, artifact.path, acc, manifest)


def input_key(cfg: Config, sources: list[dict[str, Any]]) -> str:
    """What decides a snapshot before any processing: source bytes, data config, seed."""
    blob = dumps({"sources": sources, "config": cfg.data.identity_hash(), "seed": cfg.seed})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _existing(ws: Workspace, key: str) -> PrepareResult | None:
    """The snapshot these exact inputs already produced (a content hash would only repeat it)."""
    for art in reversed(ws.list("snapshot")):
        if art.meta.get("input_key") == key and (art.path / "manifest.json").exists():
            manifest = orjson.loads((art.path / "manifest.json").read_bytes())
            c = manifest["counts"]
            acc = Accounting(read=c["read"], quarantined=c["quarantined"], dropped=Counter(c["dropped_by_reason"]),
                             kept=dict(c["splits"]))
            return PrepareResult(art.id, art.path, acc, manifest, reused=True)
    return None


def _source_hashes(cfg: Config) -> list[dict[str, Any]]:
    out = []
    for src in cfg.data.sources:
        for path in expand_source(src, cfg.base_dir):
            try:
                digest = file_sha256(path)
                size = path.stat().st_size
            except (OSError, TunesmithError) as exc:
                # read_source quarantines the file with its reason; the run goes on.
                digest, size = f"unreadable: {exc}", None
            out.append({"path": _rel(path, cfg.base_dir), "sha256": digest, "bytes": size, "format": src.format})
    return out


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The parts of the manifest that define the snapshot (not timings or versions)."""
    return {k: manifest[k] for k in ("config_hash", "sources", "counts", "seed")}


def _manifest(cfg: Config, acc: Accounting, sources: list[dict], written: _Written, started: float) -> dict[str, Any]:
    import pyarrow

    dropped_by_stage: Counter = Counter()
    for key, n in acc.dropped.items():
        dropped_by_stage[key.split(":", 1)[0]] += n
    return {
        "kind": "tunesmith.snapshot",
        "project": cfg.project,
        "config_hash": cfg.data.identity_hash(),
        "seed": cfg.seed,
        "sources": sources,
        "counts": {
            "read": acc.read,
            "kept": sum(acc.kept.values()),
            "dropped": sum(acc.dropped.values()),
            "quarantined": acc.quarantined,
            "splits": dict(acc.kept),
            "dropped_by_stage": dict(sorted(dropped_by_stage.items())),
            "dropped_by_reason": dict(sorted(acc.dropped.items())),
            "pii": {k.split(":", 1)[1]: v for k, v in sorted(acc.changed.items()) if k.startswith("pii:")},
            "normalised": acc.changed.get("normalise", 0),
            "near_duplicate_clusters": sum(1 for s in written.cluster_sizes if s > 1),
        },
        "contamination": {
            "checked_test_examples": acc.kept["test"],
            "over_threshold": len(written.contaminated),
            "examples": written.contaminated[:100],
        },
        "config": cfg.data.model_dump(mode="json"),
        "created": {
            "tunesmith": __version__, "python": platform.python_version(), "pyarrow": pyarrow.__version__,
            "seconds": round(time.time() - started, 2),
        },
    }


def _quarantine_row(q: Quarantined) -> dict[str, str]:
    return {"source": q.source, "location": q.location, "error": q.error, "preview": q.preview}


def _write_side_files(staging: Path, manifest: dict, quarantine: list[Quarantined], written: _Written) -> None:
    from tunesmith.data.report import write_report

    (staging / "survivors.parquet").unlink()
    with open(staging / "quarantine.jsonl", "wb") as fh:
        for q in quarantine:
            fh.write(orjson.dumps(_quarantine_row(q)) + b"\n")
    (staging / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    write_report(staging, manifest, written.lengths, written.cluster_sizes)


def load_split(snapshot_dir: Path, split: str) -> list[Example]:
    """The Examples of one split of a snapshot, in order."""
    if split not in SPLITS:
        raise TunesmithError(f"unknown split '{split}'; must be one of {', '.join(SPLITS)}")
    return from_table(pq.read_table(snapshot_dir / f"{split}.parquet"))


__all__ = ["Accounting", "PrepareResult", "Progress", "load_split", "prepare"]
