"""Ingest: every format → Example, every bad input → one Quarantined with its place and reason."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.config import SourceConfig
from tunesmith.data.example import Example
from tunesmith.data.ingest import Quarantined, expand_source, file_sha256, read_source
from tunesmith.errors import TunesmithError

MAX_LINE = 1 << 20
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def jl(*records: Any) -> bytes:
    """JSONL bytes, one record per line, newline-terminated."""
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def read(
    tmp_path: Path, name: str, content: bytes | str, *, max_line_bytes: int = MAX_LINE, **src: Any
) -> tuple[list[Example], list[Quarantined]]:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return read_path(tmp_path, path, max_line_bytes=max_line_bytes, **src)


def read_path(
    base: Path, path: Path, *, max_line_bytes: int = MAX_LINE, **src: Any
) -> tuple[list[Example], list[Quarantined]]:
    config = SourceConfig(
        path=str(path.relative_to(base)) if path.is_relative_to(base) else str(path), **src
    )
    items = list(read_source(config, path, base_dir=base, max_line_bytes=max_line_bytes))
    examples = [i for i in items if isinstance(i, Example)]
    bad = [i for i in items if isinstance(i, Quarantined)]
    assert len(examples) + len(bad) == len(items)
    return examples, bad


def one_bad(bad: list[Quarantined]) -> Quarantined:
    assert len(bad) == 1, bad
    return bad[0]


def turns(ex: Example) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in ex.messages]


# --------------------------------------------------------------------------- formats
def test_openai_chat_roles_normalised_and_default_system_added(tmp_path: Path) -> None:
    rec = {"messages": [{"role": "Human", "content": "q"}, {"role": "gpt", "content": "a"}]}
    own = {"messages": [{"role": "system", "content": "mine"}, *CHAT["messages"]]}
    good, bad = read(tmp_path, "c.jsonl", jl(rec, own), system="Be brief.")
    assert not bad
    assert turns(good[0]) == [("system", "Be brief."), ("user", "q"), ("assistant", "a")]
    assert turns(good[1])[0] == ("system", "mine")  # a record's own system turn wins
    assert good[0].text is None and good[0].id == "c.jsonl:1"
    assert good[0].meta == {"source": "c.jsonl", "line": 1}


def test_chat_content_parts_are_joined(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    rec = {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "c"}]}
    good, _ = read(tmp_path, "c.jsonl", jl(rec))
    assert turns(good[0])[0] == ("user", "ab")


def test_sharegpt(tmp_path: Path) -> None:
    rec = {
        "system": "sys",
        "conversations": [
            {"from": "human", "value": "q1"},
            {"from": "gpt", "value": "a1"},
            {"from": "human", "value": "q2"},
            {"from": "bot", "value": "a2"},
        ],
    }
    good, bad = read(tmp_path, "s.jsonl", jl(rec))
    assert not bad
    assert turns(good[0]) == [
        ("system", "sys"),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
    ]


@pytest.mark.parametrize(
    ("extra", "user"),
    [
        ({"input": "ctx"}, "do it\n\nctx"),
        ({}, "do it"),
        ({"input": None}, "do it"),
        ({"input": ""}, "do it"),
    ],
)
def test_alpaca_with_and_without_input(tmp_path: Path, extra: dict, user: str) -> None:
    good, bad = read(tmp_path, "a.jsonl", jl({"instruction": "do it", "output": "done", **extra}))
    assert not bad
    assert turns(good[0]) == [("user", user), ("assistant", "done")]


def test_alpaca_instruction_as_system_turn(tmp_path: Path) -> None:
    """An export whose instruction is the task prompt: it becomes the system turn, so the
    records render like chat records with that system prompt (one prompt shape to learn)."""
    records = jl(
        {"instruction": "triage", "input": "ticket 1", "output": "a1"},
        {"instruction": "triage", "output": "a2"},
        {"instruction": "triage", "input": "ticket 3", "output": "a3", "system": "other"},
    )
    good, bad = read(tmp_path, "a.jsonl", records, format="alpaca", instruction_as="system", system="unused")
    assert [turns(g) for g in good] == [[("system", "triage"), ("user", "ticket 1"), ("assistant", "a1")]]
    assert [b.error for b in bad] == [
        "missing key 'input' (alpaca record needs instruction/input/output (instruction_as: system); 'input' holds the user turn)",
        "the record has both 'system' and 'instruction' (instruction_as: system); keep one, or set instruction_as: user",
    ]
    default, _ = read(tmp_path, "a.jsonl", records, format="alpaca")
    assert turns(default[0]) == [("user", "triage\n\nticket 1"), ("assistant", "a1")]


def test_prompt_completion_strings_and_conversational(tmp_path: Path) -> None:
    conv = {
        "prompt": [{"role": "user", "content": "p"}],
        "completion": [{"role": "assistant", "content": "c"}],
    }
    good, bad = read(tmp_path, "p.jsonl", jl({"prompt": "p", "completion": "c"}, conv))
    assert not bad
    assert turns(good[0]) == turns(good[1]) == [("user", "p"), ("assistant", "c")]


def test_raw_text_record(tmp_path: Path) -> None:
    good, _ = read(tmp_path, "t.jsonl", jl({"text": "a document"}), system="ignored for text")
    assert good[0].text == "a document" and good[0].messages == []


def test_explicit_format_is_enforced(tmp_path: Path) -> None:
    _, bad = read(tmp_path, "a.jsonl", jl({"prompt": "p", "completion": "c"}), format="alpaca")
    assert (
        one_bad(bad).error == "missing key 'instruction' (alpaca record needs instruction/output)"
    )


def test_unrecognised_record_lists_its_keys(tmp_path: Path) -> None:
    _, bad = read(tmp_path, "x.jsonl", jl({"question": "q", "answer": "a"}))
    err = one_bad(bad).error
    assert err.startswith("unrecognised record (keys: 'question', 'answer')")
    assert "set `columns:`" in err


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"instruction": "i"}, "missing key 'output' (alpaca record needs instruction/output)"),
        (
            {"instruction": "i", "output": None},
            "key 'output' is null, expected a string (alpaca record needs instruction/output)",
        ),
        ({"instruction": 3, "output": "o"}, "key 'instruction' is a number (3), expected a string"),
        (
            {"instruction": "i", "input": ["x"], "output": "o"},
            "key 'input' is an array, expected a string or null",
        ),
        (
            {"prompt": "p", "completion": {"a": 1}},
            "key 'completion' is an object, expected a string",
        ),
        ({"text": True}, "key 'text' is a boolean, expected a string"),
        ({"messages": "hi"}, "key 'messages' is a string, expected an array of turns"),
        (
            {"messages": [{"role": "user", "content": "q"}]},
            "no assistant turn to learn from: the last turn is 'user'",
        ),
        ({"messages": []}, "no assistant turn to learn from: the record has no turns"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}]},
            "messages[1] has role 'tool', which is not supported; allowed: system, user, assistant",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": None},
                ]
            },
            "messages[1] (assistant) content is null",
        ),
        (
            {"messages": [{"role": "user", "text": "q"}]},
            "messages[0] has keys ['role', 'text']; expected 'role' and 'content'",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "turn 1 is a system turn; only the first turn may be one",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url"}]},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "messages[0] (user) has a content part of type 'image_url'; only text is supported",
        ),
        ({"text": "t", "meta": "oops"}, "key 'meta' is a string, expected an object"),
    ],
)
def test_wrong_schema_is_quarantined_with_the_reason(
    tmp_path: Path, record: dict, error: str
) -> None:
    good, bad = read(tmp_path, "w.jsonl", jl(CHAT, record, CHAT))
    assert [g.meta["line"] for g in good] == [1, 3]  # the records around it are still read
    q = one_bad(bad)
    assert (q.source, q.location) == ("w.jsonl", "line 2")
    assert q.error.startswith(error), q.error
    assert q.preview == json.dumps(record)[:200]


def test_valid_json_that_is_not_an_object(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "v.jsonl", b'[1, 2]\n"text"\n42\nnull\n' + jl(CHAT))
    assert len(good) == 1
    assert [(q.location, q.error) for q in bad] == [
        ("line 1", "expected a record (a JSON object), got an array"),
        ("line 2", "expected a record (a JSON object), got a string"),
        ("line 3", "expected a record (a JSON object), got a number (42)"),
        ("line 4", "expected a record (a JSON object), got null"),
    ]


def test_meta_and_group_field(tmp_path: Path) -> None:
    recs = [
        {"text": "a", "meta": {"document_id": "D1", "tag": "x"}},
        {"text": "b", "metadata": {"document_id": 7}},
        {"text": "c"},
    ]
    good, _ = read(tmp_path, "m.jsonl", jl(*recs), group_field="meta.document_id")
    assert good[0].meta == {
        "document_id": "D1",
        "tag": "x",
        "source": "m.jsonl",
        "line": 1,
        "group": "D1",
    }
    assert "group" not in good[1].meta  # `metadata.document_id` is another path
    assert "group" not in good[2].meta


def test_group_field_values_become_strings(tmp_path: Path) -> None:
    recs = [{"text": "a", "customer": 12}, {"text": "b", "customer": {"id": 1}}]
    good, _ = read(tmp_path, "g.jsonl", jl(*recs), group_field="customer")
    assert [g.meta["group"] for g in good] == ["12", '{"id":1}']


# --------------------------------------------------------------------------- JSONL bad input
def test_invalid_utf8_line(tmp_path: Path) -> None:
    content = jl(CHAT) + b'{"text": "caf\xe9 au lait"}\n' + jl(CHAT)
    good, bad = read(tmp_path, "u.jsonl", content)
    assert len(good) == 2
    q = one_bad(bad)
    assert q.location == "line 2"
    assert q.error.startswith("line is not valid UTF-8 (byte 0xe9 at column 14)")
    assert "caf\ufffd au lait" in q.preview


def test_bom_and_crlf_are_fine(tmp_path: Path) -> None:
    content = b"\xef\xbb\xbf" + jl(CHAT).replace(b"\n", b"\r\n") * 2
    good, bad = read(tmp_path, "b.jsonl", content)
    assert not bad and len(good) == 2
    assert turns(good[1])[1] == ("assistant", "hello")


def test_nul_bytes_quarantine_the_line(tmp_path: Path) -> None:
    content = jl(CHAT) + b'{"text": "a\x00b"}\n' + b"\x00\x00\x00\x00\n" + jl(CHAT)
    good, bad = read(tmp_path, "n.jsonl", content)
    assert len(good) == 2
    assert [(q.location, q.error.split(":")[0]) for q in bad] == [
        ("line 2", "line contains a NUL byte (0x00 at column 12)"),
        ("line 3", "line contains a NUL byte (0x00 at column 1)"),
    ]


def test_escaped_nul_in_a_json_string_is_content(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "n.jsonl", b'{"text": "a\\u0000b"}\n')
    assert not bad and good[0].text == "a\x00b"


def test_truncated_last_line(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "t.jsonl", jl(CHAT) + b'{"messages": [{"role": "us')
    assert len(good) == 1
    q = one_bad(bad)
    assert q.location == "line 2"
    assert q.error.startswith("truncated or invalid JSON on the last line (it has no newline")


def test_last_line_without_newline_is_fine_when_valid(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "t.jsonl", jl(CHAT) + json.dumps(CHAT).encode())
    assert not bad and len(good) == 2


def test_invalid_json_line_reports_the_column(tmp_path: Path) -> None:
    _, bad = read(tmp_path, "j.jsonl", b'{"text" "a"}\n')
    assert one_bad(bad).error == "invalid JSON: Expecting ':' delimiter at column 9"


def test_nan_is_read_by_the_stdlib_fallback(tmp_path: Path) -> None:
    # orjson refuses NaN; the stdlib accepts it, so the record is judged on its schema instead.
    _, bad = read(tmp_path, "n.jsonl", b'{"text": NaN}\n')
    assert one_bad(bad).error.startswith("key 'text' is a number (nan), expected a string")


def test_blank_lines_are_not_records(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "b.jsonl", b"\n  \n" + jl(CHAT) + b"\r\n\t\n" + jl(CHAT) + b"\n")
    assert not bad
    assert [g.id for g in good] == ["b.jsonl:3", "b.jsonl:6"]


def test_50mb_line_over_the_limit_is_skipped_without_reading_it_whole(tmp_path: Path) -> None:
    huge = b'{"text": "' + b"a" * (50 * 1024 * 1024) + b'"}\n'
    path = tmp_path / "h.jsonl"
    path.write_bytes(jl(CHAT) + huge + jl(CHAT))
    tracemalloc.start()
    try:
        good, bad = read_path(tmp_path, path, max_line_bytes=MAX_LINE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MAX_LINE  # read in bounded chunks, never the 50 MB line whole
    assert [g.meta["line"] for g in good] == [1, 3]
    q = one_bad(bad)
    assert q.location == "line 2"
    assert q.error.startswith(
        f"line is {len(huge) - 1:,} bytes, longer than data.max_line_bytes (1,048,576)"
    )
    assert q.preview == '{"text": "' + "a" * 190


def test_50mb_line_under_the_limit_is_read(tmp_path: Path) -> None:
    text = "a" * (50 * 1024 * 1024)
    good, bad = read(tmp_path, "h.jsonl", jl({"text": text}), max_line_bytes=64 * 1024 * 1024)
    assert not bad and good[0].text == text


def test_utf16_file_is_one_file_level_entry(tmp_path: Path) -> None:
    content = "\ufeff" + json.dumps(CHAT) + "\n" + json.dumps(CHAT) + "\n"
    good, bad = read(tmp_path, "w.jsonl", content.encode("utf-16-le"))
    q = one_bad(bad)
    assert not good and q.location == "file"
    assert q.error.startswith("file is UTF-16 encoded (it starts with the byte-order mark FF FE)")


def test_ids_are_stable_and_unique(tmp_path: Path) -> None:
    content = jl(*[{"text": f"t{i}"} for i in range(50)])
    first, _ = read(tmp_path, "sub/i.jsonl", content)
    again, _ = read(tmp_path, "sub/i.jsonl", content)
    ids = [e.id for e in first]
    assert ids == [e.id for e in again]
    assert len(set(ids)) == 50 and ids[0] == "sub/i.jsonl:1"


_GOOD_LINES = st.sampled_from(
    [
        json.dumps(CHAT).encode(),
        b'{"instruction": "i", "output": "o"}',
        b'{"text": "plain"}',
        b'{"prompt": "p", "completion": "c"}',
    ]
)
_GARBAGE = st.binary(max_size=40).filter(lambda b: b"\n" not in b)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.one_of(_GOOD_LINES, _GARBAGE), max_size=30), newline=st.booleans())
def test_every_non_blank_line_is_accounted_for(
    tmp_path: Path, lines: list[bytes], newline: bool
) -> None:
    content = b"\n".join(lines) + (b"\n" if newline else b"")
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        content = b" " + content  # a UTF-16 mark makes one file-level entry (tested above)
    good, bad = read(tmp_path, "p.jsonl", content, max_line_bytes=1024)
    physical = content.split(b"\n")
    physical[0] = physical[0].removeprefix(b"\xef\xbb\xbf")
    assert len(good) + len(bad) == sum(1 for line in physical if line.strip())
    assert all(b.location.startswith("line ") for b in bad)
    assert len({g.id for g in good}) == len(good)


# --------------------------------------------------------------------------- JSON
def test_json_array(tmp_path: Path) -> None:
    content = json.dumps([CHAT, {"text": "t"}, "not a record", {"text": "u"}], indent=2)
    good, bad = read(tmp_path, "a.json", "\ufeff" + content)
    assert [g.id for g in good] == ["a.json:rec1", "a.json:rec2", "a.json:rec4"]
    assert good[1].meta == {"source": "a.json", "record": 2}
    q = one_bad(bad)
    assert (q.location, q.error) == ("record 3", "expected a record (a JSON object), got a string")


def test_json_single_object_and_concatenated_objects(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "one.json", json.dumps(CHAT, indent=2))
    assert not bad and [g.id for g in good] == ["one.json:rec1"]
    good, bad = read(tmp_path, "two.json", json.dumps(CHAT, indent=2) * 2)
    assert not bad and [g.id for g in good] == ["two.json:rec1", "two.json:rec2"]


def test_json_file_holding_jsonl_is_read_as_jsonl(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "l.json", jl(CHAT) + b"{bad\n" + jl(CHAT))
    assert [g.id for g in good] == ["l.json:1", "l.json:3"]
    assert one_bad(bad).location == "line 2"


def test_truncated_json_array_keeps_the_records_before(tmp_path: Path) -> None:
    content = json.dumps([CHAT, CHAT, CHAT])[:-30]
    good, bad = read(tmp_path, "t.json", content)
    assert len(good) == 2
    q = one_bad(bad)
    assert q.location == "record 3"
    assert q.error.startswith("truncated or invalid JSON: the file ends inside record 3")
    assert "the rest of the file could not be read" in q.error


def test_invalid_utf8_in_json_array(tmp_path: Path) -> None:
    content = b'[{"text": "ok"}, {"text": "caf\xe9"}, {"text": "lost"}]'
    good, bad = read(tmp_path, "u.json", content)
    assert len(good) == 1
    q = one_bad(bad)
    assert q.location == "record 2"
    assert q.error.startswith(
        "invalid JSON after record 1 (lexical error: invalid bytes in UTF8 string.)"
    )


def test_json_top_level_scalar(tmp_path: Path) -> None:
    _, bad = read(tmp_path, "s.json", '"just a string"')
    q = one_bad(bad)
    assert q.location == "file"
    assert q.error.startswith("a .json file must hold an array of records")


# --------------------------------------------------------------------------- CSV
CSV_MAP = {
    "format": "table",
    "columns": {"prompt": "question", "completion": "answer", "meta": ["ticket"]},
}


def test_csv_with_mapping_embedded_newlines_and_quotes(tmp_path: Path) -> None:
    content = (
        "ticket,question,answer\r\n"
        '1,"Line one\r\nline two, with comma","He said ""hi"""\r\n'
        "\r\n"
        "2,plain,ok\r\n"
    )
    good, bad = read(tmp_path, "t.csv", "\ufeff" + content, **CSV_MAP)
    assert not bad
    assert turns(good[0]) == [
        ("user", "Line one\r\nline two, with comma"),
        ("assistant", 'He said "hi"'),
    ]
    assert [g.id for g in good] == ["t.csv:row1", "t.csv:row2"]
    assert good[1].meta == {"ticket": "2", "source": "t.csv", "row": 2, "line": 5}


def test_csv_without_mapping_detects_by_column_names(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "a.csv", "instruction,input,output\ndo,,done\n")
    assert not bad and turns(good[0]) == [("user", "do"), ("assistant", "done")]


def test_tsv(tmp_path: Path) -> None:
    good, _ = read(tmp_path, "a.tsv", "prompt\tcompletion\nq, with comma\ta\n")
    assert turns(good[0])[0] == ("user", "q, with comma")


def test_csv_bad_rows_are_quarantined_and_the_rest_read(tmp_path: Path) -> None:
    content = (
        b"ticket,question,answer\n"
        b"1,q,a\n"
        b"2,caf\xe9,a\n"  # invalid UTF-8
        b"3,q\x00,a\n"  # NUL byte
        b"4,q,a,extra\n"  # too many fields
        b'5,"q"x,a\n'  # stray quote after a quoted field
        b"6,q,a\n"
    )
    good, bad = read(tmp_path, "b.csv", content, **CSV_MAP)
    assert [g.meta["ticket"] for g in good] == ["1", "6"]
    assert [(q.location, q.error.split(";")[0]) for q in bad] == [
        ("row 2 (line 3)", "line 3 is not valid UTF-8 (byte 0xe9 at column 6)"),
        (
            "row 3 (line 4)",
            "line 4 contains a NUL byte (0x00 at column 4): the file is binary, UTF-16 or corrupted",
        ),
        (
            "row 4 (line 5)",
            "row has 4 fields but the header has 3 (an unquoted delimiter, or a missing one?)",
        ),
        ("row 5 (line 6)", "malformed CSV (',' expected after '\"') in lines 6-6"),
    ]


def test_csv_unterminated_quote(tmp_path: Path) -> None:
    content = 'prompt,completion\nq,a\nq,"never closed\nmore\n'
    good, bad = read(tmp_path, "q.csv", content)
    assert len(good) == 1
    q = one_bad(bad)
    assert q.location == "row 2 (line 3)"
    assert q.error.startswith(
        "a quoted field opened on line 3 is never closed (it runs to the end of the file, line 4)"
    )


def test_csv_long_line(tmp_path: Path) -> None:
    content = "prompt,completion\n" + "q," + "a" * 5000 + "\nq,a\n"
    good, bad = read(tmp_path, "l.csv", content, max_line_bytes=1024)
    assert len(good) == 1
    q = one_bad(bad)
    assert q.location == "row 1 (line 2)"
    assert q.error.startswith("line 2 is 5,002 bytes, longer than data.max_line_bytes (1,024)")


def test_csv_missing_mapped_column_is_a_file_entry(tmp_path: Path) -> None:
    _, bad = read(tmp_path, "m.csv", "ticket,question,reply\n1,q,a\n", **CSV_MAP)
    q = one_bad(bad)
    assert q.location == "file"
    assert q.error.startswith(
        "column(s) 'answer' named in the source's `columns`/`group_field` are not in the header"
    )
    assert q.error.endswith("the header has: ticket, question, reply")


def test_csv_group_column_and_id_column(tmp_path: Path) -> None:
    cols = {"prompt": "q", "completion": "a", "id": "key"}
    content = "key,q,a,customer\nk1,q,a,C1\nk2,q,a,C2\nk1,q,a,C1\n,q,a,C3\n"
    good, bad = read(
        tmp_path, "i.csv", content, format="table", columns=cols, group_field="customer"
    )
    # a repeated id is kept under a suffixed id (dedup decides), with where it was first seen
    assert [(g.id, g.meta["group"]) for g in good] == [
        ("i.csv:k1", "C1"), ("i.csv:k2", "C2"), ("i.csv:k1~2", "C1"),
    ]
    assert good[2].meta["id_first_seen_at"] == "row 1 (line 2)"
    assert [(q.location, q.error) for q in bad] == [
        ("row 4 (line 5)", "column 'key' (columns.id) is a string, expected a non-empty id"),
    ]


def test_csv_header_only_and_blank_rows(tmp_path: Path) -> None:
    assert read(tmp_path, "h.csv", "prompt,completion\n\n,\n") == ([], [])


# --------------------------------------------------------------------------- Parquet
def test_parquet_with_mapping_across_row_groups_and_batches(tmp_path: Path) -> None:
    n = 2500
    table = pa.table(
        {
            "q": [f"q{i}" for i in range(n)],
            "a": [f"a{i}" for i in range(n)],
            "ticket": list(range(n)),
            "unused": [b"x"] * n,
        }
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    cols = {"prompt": "q", "completion": "a", "meta": ["ticket"]}
    good, bad = read_path(
        tmp_path, tmp_path / "t.parquet", format="table", columns=cols, group_field="ticket"
    )
    assert not bad and len(good) == n
    last = good[-1]
    assert last.id == "t.parquet:row2500"
    assert turns(last) == [("user", "q2499"), ("assistant", "a2499")]
    assert last.meta == {"ticket": 2499, "source": "t.parquet", "row": 2500, "group": "2499"}


def test_parquet_nested_chat_without_mapping(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(
        [CHAT, {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": None}]}]
    )
    pq.write_table(table, tmp_path / "c.parquet")
    good, bad = read_path(tmp_path, tmp_path / "c.parquet")
    assert turns(good[0]) == [("user", "hi"), ("assistant", "hello")]
    q = one_bad(bad)
    assert (q.location, q.error) == (
        "row 2",
        "messages[1] (user) content is null (a tool call?); expected a string",
    )


def test_parquet_null_in_mapped_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"q": ["q", None], "a": ["a", "a"]}), tmp_path / "n.parquet")
    _, bad = read_path(
        tmp_path, tmp_path / "n.parquet", format="table", columns={"prompt": "q", "completion": "a"}
    )
    q = one_bad(bad)
    assert (q.location, q.error) == (
        "row 2",
        "column 'q' is null, expected a string (columns.prompt)",
    )


def test_parquet_missing_column_and_corrupt_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"q": ["q"], "reply": ["a"]}), tmp_path / "m.parquet")
    _, bad = read_path(
        tmp_path, tmp_path / "m.parquet", format="table", columns={"prompt": "q", "completion": "a"}
    )
    assert one_bad(bad).error.startswith(
        "column(s) 'a' named in the source's `columns`/`group_field` are not in the file; it has: q, reply"
    )
    _, bad = read(tmp_path, "x.parquet", b"PAR1 this is not parquet")
    q = one_bad(bad)
    assert q.location == "file" and q.error.startswith("not a readable Parquet file:")


def test_parquet_corrupt_row_group_is_skipped_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    table = pa.table(
        {"prompt": [f"question {i} " * 20 for i in range(300)], "completion": ["a"] * 300}
    )
    pq.write_table(table, path, row_group_size=100, write_page_checksum=True)
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 40, start + column.total_compressed_size - 10):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    good, bad = read_path(tmp_path, path)
    assert [g.meta["row"] for g in good] == [*range(1, 101), *range(201, 301)]
    q = one_bad(bad)
    assert q.location == "row group 1 (rows 101-200)"
    assert q.error.startswith("cannot decode the rows:")


# --------------------------------------------------------------------------- plain text
def test_text_file_is_one_example(tmp_path: Path) -> None:
    good, bad = read(tmp_path, "docs/policy.md", "\ufeff# Refunds\r\n\r\nWithin 30 days.\r\n")
    assert not bad
    assert good[0].id == "docs/policy.md"
    assert good[0].text == "# Refunds\n\nWithin 30 days.\n"
    assert good[0].meta == {"source": "docs/policy.md"}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"ok\nbad \xff here\n", "file is not valid UTF-8 (byte 0xff at line 2, column 5)"),
        (b"ok\nnul\x00\n", "file contains a NUL byte (0x00 at line 2, column 4)"),
        (b"x" * 2000, "file is larger than data.max_line_bytes (1,024 bytes)"),
    ],
)
def test_bad_text_file(tmp_path: Path, content: bytes, error: str) -> None:
    _, bad = read(tmp_path, "t.txt", content, max_line_bytes=1024)
    q = one_bad(bad)
    assert q.location == "file" and q.error.startswith(error)


def test_text_file_under_a_chat_format(tmp_path: Path) -> None:
    _, bad = read(tmp_path, "t.txt", "words", format="chat")
    assert one_bad(bad).error.startswith(
        "a plain-text file holds raw text, but this source's format is 'chat'"
    )


# --------------------------------------------------------------------------- gzip
def test_gzip_jsonl_csv_and_text(tmp_path: Path) -> None:
    for name, content in [
        ("a.jsonl.gz", jl(CHAT)),
        ("b.csv.gz", b"prompt,completion\nq,a\n"),
        ("c.txt.gz", b"doc"),
        ("d.json.gz", json.dumps([CHAT]).encode()),
    ]:
        good, bad = read(tmp_path, name, gzip.compress(content))
        assert len(good) == 1 and not bad, name


def test_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(jl(*[{"text": f"record {i} " * 50} for i in range(2000)]))
    good, bad = read(tmp_path, "t.jsonl.gz", blob[: len(blob) // 2])
    q = one_bad(bad)
    assert 0 < len(good) < 2000
    assert q.location == f"after line {len(good)}"
    assert "the rest of the file was not read" in q.error


def test_not_gzip(tmp_path: Path) -> None:
    _, bad = read(tmp_path, "n.jsonl.gz", jl(CHAT))
    q = one_bad(bad)
    assert q.location == "file" and q.error.startswith("cannot read the file: Not a gzipped file")


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize(
    "name", ["e.jsonl", "e.json", "e.csv", "e.txt", "e.parquet", "w.json", "w.txt"]
)
def test_empty_files_yield_nothing(tmp_path: Path, name: str) -> None:
    assert read(tmp_path, name, " \n\n" if name.startswith("w") else b"") == ([], [])


def test_unsupported_file_type(tmp_path: Path) -> None:
    _, bad = read(tmp_path, "sheet.xlsx", b"PK")
    q = one_bad(bad)
    assert q.location == "file" and q.error.startswith(
        "unsupported file type 'sheet.xlsx'; supported: .jsonl"
    )


def test_vanished_file_and_directory(tmp_path: Path) -> None:
    _, bad = read_path(tmp_path, tmp_path / "gone.jsonl")
    assert one_bad(bad).error == "cannot read the file: No such file or directory"
    (tmp_path / "d.jsonl").mkdir()
    _, bad = read_path(tmp_path, tmp_path / "d.jsonl")
    assert one_bad(bad).error.startswith("is a directory, not a file")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.jsonl"
    path.write_bytes(jl(CHAT))
    path.chmod(0)
    _, bad = read_path(tmp_path, path)
    assert one_bad(bad) == Quarantined(
        "secret.jsonl", "file", "cannot read the file: Permission denied", ""
    )


def test_read_error_is_an_entry_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same path as a permission error, for when tests run as root.
    from tunesmith.data.ingest import sources

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sources, "open", denied, raising=False)
    _, bad = read(tmp_path, "p.jsonl", jl(CHAT))
    assert one_bad(bad) == Quarantined(
        "p.jsonl", "file", "cannot read the file: Permission denied", ""
    )


def test_table_format_needs_columns(tmp_path: Path) -> None:
    with pytest.raises(TunesmithError, match="format `table` needs a `columns:` mapping"):
        read(tmp_path, "t.csv", "a\n1\n", format="table")


# --------------------------------------------------------------------------- sources
def test_expand_directory_recursive_sorted_skipping_hidden(tmp_path: Path) -> None:
    for name in [
        "raw/b.jsonl",
        "raw/a.csv",
        "raw/sub/c.txt",
        "raw/.hidden.jsonl",
        "raw/_SUCCESS",
        "raw/.git/x.jsonl",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    files = expand_source(SourceConfig(path="raw"), tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "raw/a.csv",
        "raw/b.jsonl",
        "raw/sub/c.txt",
    ]
    files = expand_source(SourceConfig(path="raw/**/*.txt"), tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["raw/sub/c.txt"]
    files = expand_source(SourceConfig(path=str(tmp_path / "raw" / "*.jsonl")), Path("/elsewhere"))
    assert files == [tmp_path / "raw" / "b.jsonl"]


def test_directory_with_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x.jsonl").write_text("x")
    (tmp_path / "d" / "sub" / "up").symlink_to(tmp_path / "d")
    files = expand_source(SourceConfig(path="d"), tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["d/sub/x.jsonl"]


def test_glob_matching_a_directory_expands_it(tmp_path: Path) -> None:
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1" / "x.jsonl").write_text("x")
    (tmp_path / "d2.jsonl").write_text("x")
    files = expand_source(SourceConfig(path="d*"), tmp_path)
    assert [f.name for f in files] == ["x.jsonl", "d2.jsonl"]


def test_expand_errors_name_the_path_and_folder(tmp_path: Path) -> None:
    with pytest.raises(
        TunesmithError, match=rf"'raw/\*.jsonl' matches no file \(searched in {tmp_path}\)"
    ):
        expand_source(SourceConfig(path="raw/*.jsonl"), tmp_path)
    with pytest.raises(
        TunesmithError, match=rf"'data.jsonl' does not exist .*config folder {tmp_path}"
    ):
        expand_source(SourceConfig(path="data.jsonl"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunesmithError, match="'empty' is an empty directory"):
        expand_source(SourceConfig(path="empty"), tmp_path)


def test_source_outside_the_config_folder_keeps_its_absolute_name(tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(jl(CHAT))
    (tmp_path / "cfg").mkdir()
    src = SourceConfig(path=str(outside))
    (ex,) = read_source(src, outside, base_dir=tmp_path / "cfg", max_line_bytes=MAX_LINE)
    assert ex.id == f"{outside.as_posix()}:1"


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 100_000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 100_000).hexdigest()
    with pytest.raises(TunesmithError, match="cannot read"):
        file_sha256(tmp_path / "missing")
