"""Table readers: CSV/TSV (stdlib ``csv``) and Parquet (``pyarrow``, by record batch).

Each row becomes a dict keyed by column name; ``formats`` maps it onto an Example through
the source's column mapping, or detects the format from the column names when there is none.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from tunesmith.config import SourceConfig
from tunesmith.data.ingest.formats import table_columns
from tunesmith.data.ingest.readers import FileContext, byte_problem, iter_lines, too_long
from tunesmith.data.ingest.records import Quarantined, RawRecord

PARQUET_BATCH_ROWS = 1024


class _LineFeed:
    """Hands ``csv.reader`` one decoded physical line at a time and remembers, per row, the
    raw lines and their problems, so a bad line spoils only the row it belongs to.

    An undecodable line is passed on decoded with U+FFFD (so the CSV structure around it
    stays intact) and the row holding it is quarantined; an over-long line is passed on
    empty for the same reason.
    """

    __slots__ = ("consumed", "limit", "lines", "number", "problems")

    def __init__(self, f: BinaryIO, limit: int):
        self.lines = iter_lines(f, limit)
        self.limit = limit
        self.number = 0
        self.consumed: list[str] = []
        self.problems: list[str] = []

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        number, data, size, newline = next(self.lines)
        self.number = number
        if size > self.limit:
            self.problems.append(f"line {number} {too_long(size, self.limit)}")
            text = ""
        else:
            problem = byte_problem(data)
            if problem:
                self.problems.append(f"line {number} {problem}")
            text = data.decode("utf-8", errors="replace")
        self.consumed.append(text)
        return text + "\n" if newline else text

    def take(self) -> tuple[str, list[str]]:
        """The raw text and problems of the lines read since the last call."""
        raw, problems = "\n".join(self.consumed), self.problems
        self.consumed, self.problems = [], []
        return raw, problems


def _raise_field_limit(limit: int) -> None:
    # csv refuses fields over 128 KiB by default; our own line limit is the real bound.
    # (The setting is process-wide; we only ever raise it.)
    if csv.field_size_limit() < limit:
        csv.field_size_limit(min(limit, sys.maxsize))


def _header_problem(header: list[str], src: SourceConfig) -> str | None:
    needed = table_columns(src, header)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            return f"the header names column '{name}' twice; column names must be unique"
        seen.add(name)
    missing = [c for c in needed if c not in seen]
    if missing:
        return (
            f"column(s) {', '.join(map(repr, missing))} named in the source's `columns`/"
            f"`group_field` are not in the header; the header has: {', '.join(header)}"
        )
    return None


def read_csv(
    f: BinaryIO, ctx: FileContext, src: SourceConfig, *, delimiter: str
) -> Iterator[RawRecord | Quarantined]:
    """Rows of a CSV/TSV file with a header row; each row reports the line it starts on.

    Quoted fields may hold delimiters, quotes (``""``) and newlines. Blank rows (no fields, or
    only empty ones) are not records. ``strict`` parsing turns a stray quote or an
    unterminated quoted field into a quarantined row instead of a silently merged one.
    """
    _raise_field_limit(ctx.max_line_bytes)
    feed = _LineFeed(f, ctx.max_line_bytes)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    row = 0
    while True:
        start = feed.number + 1
        try:
            fields, error = next(reader), None
        except StopIteration:
            return
        except csv.Error as exc:
            fields, error = [], _csv_error(str(exc), start, feed.number)
        raw, problems = feed.take()
        problem = "; ".join(problems) or error
        if problem is None and not any(v.strip() for v in fields):
            continue
        if header is None:
            if problem:
                yield ctx.quarantine(
                    "file", f"the header row (line {start}) is unreadable: {problem}", raw
                )
                return
            header = [name.strip() for name in fields]
            if bad := _header_problem(header, src):
                yield ctx.quarantine("file", bad, raw)
                return
            continue
        row += 1
        yield _row(ctx, header, fields, problem, row, start, raw)


def _csv_error(message: str, start: int, end: int) -> str:
    if "unexpected end of data" in message:
        return (
            f"a quoted field opened on line {start} is never closed (it runs to the end of the "
            f"file, line {end}); check for a stray double quote"
        )
    return f"malformed CSV ({message}) in lines {start}-{end}; quote fields that hold quotes"


def _row(
    ctx: FileContext,
    header: list[str],
    fields: list[str],
    problem: str | None,
    row: int,
    start: int,
    raw: str,
) -> RawRecord | Quarantined:
    location = f"row {row} (line {start})"
    if problem:
        return ctx.quarantine(location, problem, raw)
    if len(fields) != len(header):
        return ctx.quarantine(
            location,
            f"row has {len(fields)} fields but the header has {len(header)} "
            "(an unquoted delimiter, or a missing one?)",
            raw,
        )
    data = dict(zip(header, fields, strict=True))
    return RawRecord(data, f"row{row}", location, {"row": row, "line": start}, raw, "column")


# --------------------------------------------------------------------------- Parquet
def read_parquet(
    path: Path, ctx: FileContext, src: SourceConfig
) -> Iterator[RawRecord | Quarantined]:
    """Rows of a Parquet file, one row group and one record batch at a time.

    A row group that fails to decode is quarantined as a whole (location ``row group N
    (rows a-b)``) and reading goes on with the next one.
    """
    try:
        # Verify page CRCs where the writer stored them: corruption then fails loudly
        # instead of decoding into plausible garbage.
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        yield ctx.quarantine("file", f"not a readable Parquet file: {exc}")
        return
    with pf:
        names = pf.schema_arrow.names
        needed = table_columns(src, names)
        missing = [c for c in needed if c not in names]
        if missing:
            yield ctx.quarantine(
                "file",
                f"column(s) {', '.join(map(repr, missing))} named in the source's `columns`/"
                f"`group_field` are not in the file; it has: {', '.join(names)}",
            )
            return
        # With a mapping, read only the columns it names (Parquet is columnar: a big win).
        columns = needed if src.columns is not None else None
        first = 1
        for group in range(pf.num_row_groups):
            yield from _row_group(pf, group, first, columns, ctx)
            first += pf.metadata.row_group(group).num_rows


def _row_group(
    pf: pq.ParquetFile, group: int, first: int, columns: list[str] | None, ctx: FileContext
) -> Iterator[RawRecord | Quarantined]:
    """The rows of one row group, numbered from ``first``; a decode error ends the group."""
    row = first - 1
    try:
        for batch in pf.iter_batches(PARQUET_BATCH_ROWS, row_groups=[group], columns=columns):
            for data in batch.to_pylist():
                row += 1
                yield RawRecord(data, f"row{row}", f"row {row}", {"row": row}, None, "column")
    except (pa.ArrowException, OSError) as exc:
        last = first + pf.metadata.row_group(group).num_rows - 1
        yield ctx.quarantine(
            f"row group {group} (rows {row + 1}-{last})", f"cannot decode the rows: {exc}"
        )
