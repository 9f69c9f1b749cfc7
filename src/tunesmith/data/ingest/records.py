"""The two things a reader hands on: a parsed record (``RawRecord``) or a ``Quarantined`` entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

PREVIEW_CHARS = 200


@dataclass(slots=True)
class Quarantined:
    """An input record (or a whole file) that could not be read or converted.

    Args:
        source: the file, relative to the config folder (as the user wrote it).
        location: where in the file: ``"line 17"``, ``"row 5 (line 9)"``, ``"record 3"``,
            ``"file"`` (the whole file), ``"row group 2 (rows 1025-2048)"``.
        error: what was wrong and what was expected, in words a user can act on.
        preview: the first 200 characters of the raw input (bad bytes shown as U+FFFD).
    """

    source: str
    location: str
    error: str
    preview: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "location": self.location,
            "error": self.error,
            "preview": self.preview,
        }


@dataclass(slots=True)
class RawRecord:
    """One parsed input record, before it is converted into an ``Example``.

    Args:
        data: the parsed value: a dict for a well-formed record, anything else otherwise
            (the conversion quarantines non-objects with a message naming the type).
        key: the id suffix after ``"<file>:"``: ``"17"`` (JSONL line), ``"row5"``, ``"rec3"``;
            ``""`` for a whole-file record (the id is then the file name alone).
        location: human-readable position for a quarantine entry.
        position: the same position as numbers, copied into ``Example.meta``.
        raw: the raw line(s) when the reader has them (for the preview); else ``data`` is shown.
        noun: what the record's fields are called in messages: ``"key"`` or ``"column"``.
        whole_text: a plain-text file: ``data`` is the file's text, not a record.
    """

    data: Any
    key: str
    location: str
    position: dict[str, int] = field(default_factory=dict)
    raw: bytes | str | None = None
    noun: str = "key"
    whole_text: bool = False

    def preview(self) -> str:
        return preview_of(self.raw if self.raw is not None else self.data)


def preview_of(raw: Any) -> str:
    """First ``PREVIEW_CHARS`` characters of raw input; undecodable bytes become U+FFFD."""
    if isinstance(raw, bytes):
        # 4 bytes per character at most in UTF-8: never decode more than needed.
        text = raw[: PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = orjson.dumps(raw, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return text[:PREVIEW_CHARS]


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages ("an array", "a number")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"
