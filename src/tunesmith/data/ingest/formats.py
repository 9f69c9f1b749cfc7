"""Record → ``Example``: detect the format of a parsed record and convert it, once, at the edge.

Formats (``SourceConfig.format``; ``auto`` picks by the keys present, in this order):

- ``chat``: OpenAI chat, ``{"messages": [{"role", "content"}, ...]}``
- ``sharegpt``: ``{"conversations": [{"from", "value"}, ...], "system"?}``
- ``alpaca``: ``{"instruction", "input"?, "output", "system"?}``
- ``prompt_completion``: ``{"prompt", "completion"}`` (strings, or lists of turns)
- ``text``: ``{"text"}``: raw text for continued pre-training
- a column mapping (``SourceConfig.columns``; format ``table``), for any file type.

A chat record must end with an assistant turn; missing, null or non-string fields, unknown
roles and misplaced system turns raise ``RecordError`` (the reader quarantines the record).
An empty string is *not* an error here: it is valid input that the filters drop with a reason.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from tunesmith.config import ColumnMapping, SourceConfig
from tunesmith.data.example import Example
from tunesmith.data.ingest.records import RawRecord, json_type

Turns = list[dict[str, str]]


class RecordError(ValueError):
    """A record that parsed but does not fit its format; the message says what was expected."""


ROLE_ALIASES: dict[str, str] = {
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system turn
    "user": "user",
    "human": "user",
    "prompter": "user",  # OpenAssistant
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",  # Gemini
    "ai": "assistant",
    "chatgpt": "assistant",
}
_ALLOWED_ROLES = (
    "system, user, assistant (aliases: "
    + ", ".join(f"{k}→{v}" for k, v in ROLE_ALIASES.items() if k != v)
    + ")"
)
_MISSING = object()


# --------------------------------------------------------------------------- fields
def _text(data: dict, key: str, noun: str, need: str) -> str:
    """The string at ``data[key]``; missing, null or non-string is a RecordError."""
    value = data.get(key, _MISSING)
    if value is _MISSING:
        raise RecordError(f"missing {noun} '{key}' ({need})")
    if not isinstance(value, str):
        raise RecordError(f"{noun} '{key}' is {json_type(value)}, expected a string ({need})")
    return value


def _optional_text(data: dict, key: str, noun: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise RecordError(f"{noun} '{key}' is {json_type(value)}, expected a string or null")


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path (``meta.document_id``, ``turns.0.id``), or ``_MISSING``.

    A key that itself contains dots (a CSV column ``a.b``) wins over the path.
    """
    if isinstance(data, dict) and path in data:
        return data[path]
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


# --------------------------------------------------------------------------- turns
def _content(value: Any, where: str) -> str:
    """Turn content: a string, or OpenAI content parts of type text (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else json_type(part)
                raise RecordError(
                    f"{where} has a content part of type {kind!r}; only text is supported"
                )
            texts.append(_text(part, "text", "key", f"{where} text part"))
        return "".join(texts)
    raise RecordError(f"{where} content is {json_type(value)}, expected a string")


def _turn(turn: Any, where: str) -> dict[str, str]:
    """One turn, OpenAI (``role``/``content``) or sharegpt (``from``/``value``) keys."""
    if not isinstance(turn, dict):
        raise RecordError(
            f"{where} is {json_type(turn)}, expected an object with 'role' and 'content'"
        )
    role_key, content_key = ("from", "value") if "from" in turn else ("role", "content")
    if role_key not in turn or content_key not in turn:
        raise RecordError(
            f"{where} has keys {sorted(turn)}; expected 'role' and 'content' "
            "(or sharegpt's 'from' and 'value')"
        )
    raw_role = turn[role_key]
    role = ROLE_ALIASES.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
    if role is None:
        raise RecordError(
            f"{where} has role {raw_role!r}, which is not supported; allowed: {_ALLOWED_ROLES}"
        )
    if turn[content_key] is None:
        raise RecordError(f"{where} ({role}) content is null (a tool call?); expected a string")
    return {"role": role, "content": _content(turn[content_key], f"{where} ({role})")}


def _turns(data: dict, key: str, noun: str) -> Turns:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        raise RecordError(f"missing {noun} '{key}' (a list of turns)")
    if not isinstance(value, list):
        raise RecordError(f"{noun} '{key}' is {json_type(value)}, expected an array of turns")
    return [_turn(t, f"{key}[{i}]") for i, t in enumerate(value)]


_UNANSWERED = contextvars.ContextVar("tunesmith_unanswered_ok", default=False)


@contextlib.contextmanager
def unanswered_records() -> Iterator[None]:
    """Within the block, records may end before their answer (a user turn last, an alpaca
    record without ``output``, a prompt without a completion): inputs of batch prediction."""
    token = _UNANSWERED.set(True)
    try:
        yield
    finally:
        _UNANSWERED.reset(token)


def _finish_chat(turns: Turns, system: str | None) -> Turns:
    """Check the turn order and add the default system prompt where there is none."""
    for i, turn in enumerate(turns):
        if turn["role"] == "system" and i > 0:
            raise RecordError(f"turn {i} is a system turn; only the first turn may be one")
    if not turns or (turns[-1]["role"] != "assistant" and not (_UNANSWERED.get() and turns[-1]["role"] == "user")):
        last = f"the last turn is '{turns[-1]['role']}'" if turns else "the record has no turns"
        raise RecordError(
            f"no assistant turn to learn from: {last} (a chat record must end with an assistant turn)"
        )
    if system and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system})
    return turns


def _pair(system: str | None, user: str, assistant: str | None) -> Turns:
    turns = [{"role": "system", "content": system}] if system else []
    answer = [] if assistant is None else [{"role": "assistant", "content": assistant}]  # None: unanswered_records
    return [*turns, {"role": "user", "content": user}, *answer]


# --------------------------------------------------------------------------- formats
# Each converter returns (messages, text) from a record dict; `system` is the source default.
def _chat(data: dict, noun: str, system: str | None) -> tuple[Turns, None]:
    return _finish_chat(_turns(data, "messages", noun), system), None


def _sharegpt(data: dict, noun: str, system: str | None) -> tuple[Turns, None]:
    own = _optional_text(data, "system", noun)  # a sharegpt variant keeps it beside the turns
    return _finish_chat(_turns(data, "conversations", noun), own or system), None


def _alpaca(data: dict, noun: str, system: str | None) -> tuple[Turns, None]:
    need = "alpaca record needs instruction/output"
    instruction = _text(data, "instruction", noun, need)
    extra = _optional_text(data, "input", noun)
    output = _optional_text(data, "output", noun) if _UNANSWERED.get() else _text(data, "output", noun, need)
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return _pair(_optional_text(data, "system", noun) or system, user, output), None


def _prompt_completion(data: dict, noun: str, system: str | None) -> tuple[Turns, None]:
    if isinstance(data.get("prompt"), list) and isinstance(data.get("completion"), list):
        # Conversational prompt/completion (lists of turns), as in TRL.
        turns = _turns(data, "prompt", noun) + _turns(data, "completion", noun)
        return _finish_chat(turns, system), None
    need = "prompt/completion record needs prompt and completion strings"
    prompt = _text(data, "prompt", noun, need)
    completion = _optional_text(data, "completion", noun) if _UNANSWERED.get() else _text(data, "completion", noun, need)
    return _pair(_optional_text(data, "system", noun) or system, prompt, completion), None


def _raw_text(data: dict, noun: str, system: str | None) -> tuple[Turns, str]:
    return [], _text(data, "text", noun, "a text record needs 'text'")


CONVERTERS: dict[str, Callable[[dict, str, str | None], tuple[Turns, str | None]]] = {
    "chat": _chat,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "text": _raw_text,
}
# The key that identifies each format under `auto`, checked in this order.
_DETECT = (
    ("messages", "chat"),
    ("conversations", "sharegpt"),
    ("instruction", "alpaca"),
    ("prompt", "prompt_completion"),
    ("completion", "prompt_completion"),
    ("text", "text"),
)


def detect_format(data: dict, noun: str = "key") -> str:
    """The format of a record under ``format: auto``, from the keys it has."""
    for key, fmt in _DETECT:
        if key in data:
            return fmt
    keys = ", ".join(map(repr, list(data)[:12])) or "none"
    raise RecordError(
        f"unrecognised record ({noun}s: {keys}); expected 'messages' (OpenAI chat), "
        "'conversations' (sharegpt), 'instruction'/'output' (alpaca), 'prompt'/'completion' "
        "or 'text', or set `columns:` for this source"
    )


def _from_columns(
    data: dict, cols: ColumnMapping, noun: str, system: str | None
) -> tuple[Turns, str | None]:
    if cols.text:
        return [], _text(data, cols.text, noun, "columns.text")
    assert cols.prompt and cols.completion  # ColumnMapping's validator guarantees them
    prompt = _text(data, cols.prompt, noun, "columns.prompt")
    completion = _text(data, cols.completion, noun, "columns.completion")
    own = _optional_text(data, cols.system, noun) if cols.system else None
    return _pair(own or system, prompt, completion), None


def _alpaca_instruction_as_system(data: dict, noun: str, system: str | None) -> tuple[Turns, None]:
    """Alpaca whose ``instruction`` is really a system prompt (the same task text in every
    record): instruction -> system turn, ``input`` -> user turn. The records then render like
    the project's chat records (same system prompt, same user turn), so training and eval see
    one prompt shape, and the shared system prompt is computed once per packed row / batch."""
    need = "alpaca record needs instruction/input/output (instruction_as: system)"
    instruction = _text(data, "instruction", noun, need)
    user = _text(data, "input", noun, need + "; 'input' holds the user turn")
    if _optional_text(data, "system", noun):
        raise RecordError("the record has both 'system' and 'instruction' (instruction_as: system); "
                          "keep one, or set instruction_as: user")
    return _pair(instruction, user, _text(data, "output", noun, need)), None


def _convert(data: dict, src: SourceConfig, noun: str) -> tuple[Turns, str | None]:
    if src.columns is not None:
        return _from_columns(data, src.columns, noun, src.system)
    fmt = detect_format(data, noun) if src.format == "auto" else src.format
    if fmt == "alpaca" and src.instruction_as == "system":
        return _alpaca_instruction_as_system(data, noun, src.system)
    return CONVERTERS[fmt](data, noun, src.system)


# --------------------------------------------------------------------------- meta, id
def _jsonable(value: Any) -> Any:
    """Meta must survive JSON: Parquet dates, decimals and bytes become strings."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))


def _group(value: Any) -> str | None:
    if value is _MISSING or value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS).decode()


def _meta(data: dict, src: SourceConfig, rec: RawRecord, source: str) -> dict[str, Any]:
    """The record's own ``meta``/``metadata`` dict, mapped meta columns, then our keys."""
    meta: dict[str, Any] = {}
    key = "meta" if "meta" in data else "metadata"
    own = data.get(key)
    if isinstance(own, dict):
        # Parsed JSON is JSON already; only table values (Parquet) need converting.
        meta.update(own if rec.noun == "key" else {str(k): _jsonable(v) for k, v in own.items()})
    elif own is not None and rec.noun == "key":
        raise RecordError(f"key '{key}' is {json_type(own)}, expected an object")
    for column in src.columns.meta if src.columns else ():
        if column not in data:
            raise RecordError(f"missing {rec.noun} '{column}' (listed in columns.meta)")
        meta[column] = _jsonable(data[column])
    meta["source"] = source
    meta.update(rec.position)
    if src.group_field and (group := _group(lookup(data, src.group_field))) is not None:
        meta["group"] = group
    return meta


def _record_id(data: dict, src: SourceConfig, rec: RawRecord, source: str) -> str:
    """``<file>:<line>`` / ``:row<n>`` / ``:rec<n>``, or ``<file>:<value>`` of ``columns.id``
    (stable when rows are reordered; ``read_source`` rejects a value seen twice in a file)."""
    column = src.columns.id if src.columns else None
    if column is None:
        return f"{source}:{rec.key}"
    value = data.get(column)
    if value is None or value == "" or isinstance(value, dict | list):
        raise RecordError(
            f"{rec.noun} '{column}' (columns.id) is {json_type(value)}, expected a non-empty id"
        )
    return f"{source}:{value}"


def to_example(rec: RawRecord, src: SourceConfig, source: str) -> Example:
    """Convert one parsed record; raise RecordError saying what was wrong and what was expected."""
    if rec.whole_text:
        if src.format not in ("auto", "text"):
            raise RecordError(
                f"a plain-text file holds raw text, but this source's format is '{src.format}'; "
                "use format `auto` or `text` for .txt/.md files"
            )
        return Example(source, [], rec.data, {"source": source})
    data = rec.data
    if not isinstance(data, dict):
        raise RecordError(f"expected a record (a JSON object), got {json_type(data)}")
    messages, text = _convert(data, src, rec.noun)
    return Example(
        _record_id(data, src, rec, source), messages, text, _meta(data, src, rec, source)
    )


def table_columns(src: SourceConfig, names: list[str]) -> list[str]:
    """Columns a table must have: the mapped ones and the group column.

    ``names`` are the table's columns: a dotted ``group_field`` that is not a column itself
    is a path into a struct column and needs only its top-level column.
    """
    cols = src.columns
    needed = (
        [c for c in (cols.prompt, cols.completion, cols.system, cols.text, cols.id) if c]
        if cols
        else []
    )
    needed += cols.meta if cols else []
    group = src.group_field
    if group:
        top = group.split(".")[0]
        needed.append(top if group not in names and top in names else group)
    return list(dict.fromkeys(needed))
