"""Line-based file readers: JSONL, JSON and plain text, as streams of parsed records.

Files are read in binary and decoded per line, so one bad line is quarantined on its own and
the lines around it are still read; no line longer than ``max_line_bytes`` is ever held in
memory whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import ijson
import orjson

from tunesmith.data.ingest.records import Quarantined, RawRecord, preview_of

UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # also the start of the UTF-32 LE mark
_SKIP_CHUNK = 1 << 20


@dataclass(slots=True)
class FileContext:
    """What every reader needs to know about the file it reads."""

    source: str  # display name (relative to the config folder)
    max_line_bytes: int

    def quarantine(self, location: str, error: str, raw: Any = b"") -> Quarantined:
        return Quarantined(self.source, location, error, preview_of(raw))


# --------------------------------------------------------------------------- bytes
def utf16_problem(f: BinaryIO) -> str | None:
    """A message when the file starts with a UTF-16 byte-order mark; leaves f at the start.

    Such a file (Excel's "Unicode text") has NUL bytes in every line: one clear file-level
    entry beats a NUL complaint per line.
    """
    head = f.read(2)
    f.seek(0)
    if head in _UTF16_BOMS:
        return (
            f"file is UTF-16 encoded (it starts with the byte-order mark {head.hex(' ').upper()}); "
            "tunesmith reads UTF-8: re-save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)"
        )
    return None


def _where(raw: bytes, offset: int) -> str:
    """'column C' for a single line, 'line L, column C' for a multi-line buffer (1-based)."""
    newlines = raw.count(b"\n", 0, offset)
    column = offset - raw.rfind(b"\n", 0, offset)
    return f"line {newlines + 1}, column {column}" if newlines else f"column {column}"


def byte_problem(raw: bytes) -> str | None:
    """Why raw bytes are not text we accept (NUL bytes, invalid UTF-8), or None.

    NUL bytes are quarantined, not stripped: they never occur in real text, and where they do
    occur the bytes are binary, UTF-16 or a zero-filled block left by a crash, so stripping
    them would hide corruption. An escaped ``\\u0000`` inside a JSON string is valid JSON and
    is left to the normalise stage.
    """
    nul = raw.find(b"\x00")
    if nul >= 0:
        return (
            f"contains a NUL byte (0x00 at {_where(raw, nul)}): the file is binary, "
            "UTF-16 or corrupted"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at {_where(raw, exc.start)}); "
            "re-save the file as UTF-8"
        )
    return None


def iter_lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes, int, bool]]:
    """``(number, data, size, newline)`` per physical line, 1-based, UTF-8 BOM stripped.

    ``data`` excludes the ``\\n``; ``size`` is the full length without it. A line longer than
    ``max_bytes`` is returned as its first ``max_bytes + 1`` bytes (its rest is skipped in
    chunks, never held whole), so ``size > max_bytes`` tells the caller to quarantine it.
    ``newline`` is False only for a last line that has no newline (a possible truncation).
    """
    number = 0
    while chunk := f.readline(max_bytes + 1):
        number += 1
        if number == 1 and chunk.startswith(UTF8_BOM):
            chunk = chunk[len(UTF8_BOM) :]
        if chunk.endswith(b"\n"):
            yield number, chunk[:-1], len(chunk) - 1, True
        elif len(chunk) <= max_bytes:  # readline stopped short: end of file
            yield number, chunk, len(chunk), False
        else:
            size, newline = _skip_rest(f, len(chunk))
            yield number, chunk, size, newline


def _skip_rest(f: BinaryIO, size: int) -> tuple[int, bool]:
    """Read past the rest of an over-long line; return its full size and whether it ended."""
    while chunk := f.readline(_SKIP_CHUNK):
        if chunk.endswith(b"\n"):
            return size + len(chunk) - 1, True
        size += len(chunk)
    return size, False


def too_long(size: int, max_bytes: int) -> str:
    return (
        f"is {size:,} bytes, longer than data.max_line_bytes ({max_bytes:,}); skipped "
        "without parsing (raise data.max_line_bytes if such records are real)"
    )


# --------------------------------------------------------------------------- JSONL
def _parse_json_line(body: bytes, newline: bool) -> tuple[Any, str | None]:
    """Parse one line: orjson first (fast); the stdlib only when orjson refuses it."""
    try:
        return orjson.loads(body), None
    except orjson.JSONDecodeError:
        pass
    problem = byte_problem(body)
    if problem:
        return None, f"line {problem}"
    try:
        # The stdlib also accepts NaN/Infinity, which orjson refuses.
        return json.loads(body.decode("utf-8")), None
    except RecursionError:
        return None, "invalid JSON: nested too deeply"
    except json.JSONDecodeError as exc:
        if not newline:
            return None, (
                f"truncated or invalid JSON on the last line (it has no newline: was the file "
                f"cut off while being written?): {exc.msg} at column {exc.colno}"
            )
        return None, f"invalid JSON: {exc.msg} at column {exc.colno}"


def read_jsonl(f: BinaryIO, ctx: FileContext) -> Iterator[RawRecord | Quarantined]:
    """One record per line. Blank (whitespace-only) lines are not records and are skipped."""
    limit = ctx.max_line_bytes
    for number, data, size, newline in iter_lines(f, limit):
        if size > limit:
            yield ctx.quarantine(f"line {number}", f"line {too_long(size, limit)}", data)
            continue
        body = data.strip()  # also drops the \r of CRLF files
        if not body:
            continue
        value, problem = _parse_json_line(body, newline)
        if problem:
            yield ctx.quarantine(f"line {number}", problem, data)
        else:
            yield RawRecord(value, str(number), f"line {number}", {"line": number}, data)


# --------------------------------------------------------------------------- JSON
def _first_byte(f: BinaryIO) -> bytes:
    """The first non-whitespace byte after any BOM (b"" for an empty file); rewinds f."""
    chunk = f.read(1 << 16)
    if chunk.startswith(UTF8_BOM):
        chunk = chunk[len(UTF8_BOM) :]
    while chunk and not chunk.lstrip():
        chunk = f.read(1 << 16)
    f.seek(0)
    return chunk.lstrip()[:1]


def _first_line_is_record(f: BinaryIO, limit: int) -> bool:
    """True when the first non-blank line is a whole JSON object: the file is really JSONL."""
    for _number, data, size, _newline in iter_lines(f, limit):
        if size > limit:
            return False
        if data.strip():
            try:
                return isinstance(orjson.loads(data), dict)
            except orjson.JSONDecodeError:
                return False
    return False


def read_json(f: BinaryIO, ctx: FileContext) -> Iterator[RawRecord | Quarantined]:
    """A top-level array of records, one object, or concatenated objects; streamed by ijson.

    A ``.json`` file whose first line is a whole object is read as JSONL (a common naming
    mix-up), which gives line numbers and lets one bad line be skipped.
    """
    first = _first_byte(f)
    if not first:
        return
    if first == b"[":
        yield from _stream_json(f, ctx, "item")
    elif first == b"{" and _first_line_is_record(f, ctx.max_line_bytes):
        f.seek(0)
        yield from read_jsonl(f, ctx)
    elif first == b"{":
        f.seek(0)
        yield from _stream_json(f, ctx, "")
    else:
        yield ctx.quarantine(
            "file",
            "a .json file must hold an array of records ([{...}, ...]) or objects ({...}); "
            f"this one starts with {first.decode('latin-1')!r}",
            f.read(4 * 200),
        )


def _stream_json(f: BinaryIO, ctx: FileContext, prefix: str) -> Iterator[RawRecord | Quarantined]:
    if f.read(len(UTF8_BOM)) != UTF8_BOM:
        f.seek(0)
    count = 0
    items = ijson.items(f, prefix, use_float=True, multiple_values=not prefix)
    try:
        for value in items:
            count += 1
            yield RawRecord(value, f"rec{count}", f"record {count}", {"record": count})
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        kind, context = _ijson_error(exc)
        yield ctx.quarantine(f"record {count + 1}", _stream_error(kind, count), context)


def _ijson_error(exc: Exception) -> tuple[str, str]:
    """yajl's message is 'kind\\n  context\\n  (right here) ---^': keep kind and context."""
    msg = exc.args[0] if exc.args else str(exc)
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", errors="replace")
    lines = [line.strip() for line in str(msg).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__), (lines[1] if len(lines) > 1 else "")


def _stream_error(kind: str, count: int) -> str:
    lost = (
        "the rest of the file could not be read (a JSON array cannot be re-synchronised "
        "after an error; JSONL can)"
    )
    if "premature EOF" in kind:
        return f"truncated or invalid JSON: the file ends inside record {count + 1}; {lost}"
    return f"invalid JSON after record {count} ({kind}); {lost}"


# --------------------------------------------------------------------------- plain text
def read_text(f: BinaryIO, ctx: FileContext) -> Iterator[RawRecord | Quarantined]:
    """A ``.txt``/``.md`` file is one raw-text record (for continued pre-training).

    One record per file, not per paragraph: a document's paragraphs belong together (and in
    one split). CRLF becomes LF; a whitespace-only file yields nothing.
    """
    limit = ctx.max_line_bytes
    raw = f.read(limit + 1)
    if len(raw) > limit:
        yield ctx.quarantine(
            "file",
            f"file is larger than data.max_line_bytes ({limit:,} bytes); a plain-text file is "
            "one record: split it or raise data.max_line_bytes",
            raw,
        )
        return
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM) :]
    problem = byte_problem(raw)
    if problem:
        yield ctx.quarantine("file", f"file {problem}", raw)
        return
    text = raw.decode("utf-8").replace("\r\n", "\n")
    if text.strip():
        yield RawRecord(text, "", "file", {}, whole_text=True)
