"""Ingest: files → canonical ``Example`` records, every bad record quarantined with its place.

Files, globs and directories of JSONL, JSON, CSV/TSV, Parquet and plain text (``.gz`` too,
except Parquet) are read as streams; the record format is detected per record (see
``formats``) or set per source; CSV/Parquet columns can be mapped in the config. No dataset
registration file.

Accounting: every non-blank input record comes out as exactly one ``Example`` or one
``Quarantined`` (with file, location, error and a preview). A file that cannot be read at all
gives one ``Quarantined`` with location ``"file"``. Nothing here raises for bad data; only a
source that names no file, or a config contradiction, raises ``TunesmithError``.

Behaviour choices:

- Blank (whitespace-only) JSONL lines and blank CSV rows are not records: skipped, not counted.
- An empty or whitespace-only file yields nothing (the pipeline notes it).
- A UTF-8 BOM is stripped; CRLF line ends are fine; a UTF-16 file is quarantined as a whole.
- NUL bytes quarantine the line/row/file (see ``readers.byte_problem`` for why not strip).
- A line longer than ``max_line_bytes`` is quarantined and skipped without being held whole.
- ``.txt``/``.md`` files are one raw-text Example per file (id: the file name).
- A ``.json`` file is an array of records, one object, or concatenated objects, streamed;
  if its first line is a whole object it is read as JSONL. After a syntax error in a JSON
  array the rest of that file cannot be read: the entry says so.
- Ids: ``<file>:<line>`` (JSONL), ``<file>:row<n>`` (CSV/Parquet), ``<file>:rec<n>`` (JSON),
  ``<file>`` (text), or ``<file>:<value>`` with ``columns.id``; file names are relative to
  the config folder.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tunesmith.config import SourceConfig
from tunesmith.data.example import Example
from tunesmith.data.ingest.formats import RecordError, detect_format, to_example
from tunesmith.data.ingest.readers import (
    FileContext,
    read_json,
    read_jsonl,
    read_text,
    utf16_problem,
)
from tunesmith.data.ingest.records import Quarantined, RawRecord
from tunesmith.data.ingest.sources import (
    display_path,
    expand_source,
    file_kind,
    file_sha256,
    open_binary,
    supported_types,
)
from tunesmith.data.ingest.tables import read_csv, read_parquet
from tunesmith.errors import TunesmithError

__all__ = [
    "Quarantined",
    "RecordError",
    "detect_format",
    "display_path",
    "expand_source",
    "file_sha256",
    "read_source",
]

_STREAM_READERS = {
    "jsonl": lambda f, ctx, src: read_jsonl(f, ctx),
    "json": lambda f, ctx, src: read_json(f, ctx),
    "text": lambda f, ctx, src: read_text(f, ctx),
    "csv": partial(read_csv, delimiter=","),
    "tsv": partial(read_csv, delimiter="\t"),
}


def read_source(
    src: SourceConfig, path: Path, *, base_dir: Path, max_line_bytes: int
) -> Iterator[Example | Quarantined]:
    """Stream one file of a source as Examples and Quarantined entries, in file order.

    Args:
        src: the source's config (format, column mapping, group field, default system prompt).
        path: one file from ``expand_source(src, base_dir)``.
        base_dir: the config folder; names in ids, meta and quarantine entries are relative to it.
        max_line_bytes: longest accepted line (and plain-text file); longer ones are quarantined.

    Raises:
        TunesmithError: only for a config contradiction (format ``table`` without ``columns``).
    """
    if src.format == "table" and src.columns is None:
        raise TunesmithError(f"source '{src.path}': format `table` needs a `columns:` mapping")
    ctx = FileContext(display_path(path, base_dir), max_line_bytes)
    seen_ids: dict[str, str] = {}
    for item in _read_file(path, ctx, src):
        yield item if isinstance(item, Quarantined) else _convert(item, src, ctx, seen_ids)


def _convert(
    item: RawRecord, src: SourceConfig, ctx: FileContext, seen_ids: dict[str, str]
) -> Example | Quarantined:
    try:
        example = to_example(item, src, ctx.source)
    except RecordError as exc:
        return ctx.quarantine(item.location, str(exc), item.preview())
    # Positional ids are unique by construction; ids from a column may repeat (a ticket
    # exported twice). The record is kept under a suffixed id so dedup, not ingest, decides:
    # an identical re-export is then dropped as an exact duplicate with a reason.
    if src.columns is not None and src.columns.id is not None:
        first = seen_ids.setdefault(example.id, item.location)
        if first != item.location:
            repeats = sum(1 for k in seen_ids if k.startswith(example.id + "~")) + 2
            example.meta["id_first_seen_at"] = first
            example.id = f"{example.id}~{repeats}"
            seen_ids[example.id] = item.location
    return example


def _read_file(
    path: Path, ctx: FileContext, src: SourceConfig
) -> Iterator[RawRecord | Quarantined]:
    """Parsed records of one file; I/O failures become a quarantine entry, never a traceback."""
    if path.is_dir():
        yield ctx.quarantine(
            "file",
            "is a directory, not a file (from a directory source: its files could not be "
            "listed; check its permissions)",
        )
        return
    kind = file_kind(path)
    if kind is None:
        yield ctx.quarantine(
            "file", f"unsupported file type '{path.name}'; supported: {supported_types()}"
        )
        return
    last: str | None = None
    try:
        for item in _records(path, *kind, ctx, src):
            last = item.location
            yield item
    except (OSError, EOFError, zlib.error) as exc:
        # Unreadable, vanished, or a corrupt/truncated gzip stream.
        yield ctx.quarantine("file" if last is None else f"after {last}", _io_error(exc, last))


def _records(
    path: Path, kind: str, gz: bool, ctx: FileContext, src: SourceConfig
) -> Iterator[RawRecord | Quarantined]:
    if path.stat().st_size == 0:  # an empty file has no records (not even a Parquet footer)
        return
    if kind == "parquet":
        yield from read_parquet(path, ctx, src)
        return
    with open_binary(path, gz) as f:
        if problem := utf16_problem(f):
            yield ctx.quarantine("file", problem, f.read(400))
            return
        yield from _STREAM_READERS[kind](f, ctx, src)


def _io_error(exc: BaseException, last: str | None) -> str:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if last is None:
        return f"cannot read the file: {reason}"
    return f"reading stopped after {last}: {reason}; the rest of the file was not read"
