"""Examples <-> Arrow tables: the batch format the stages and the snapshot files use.

``meta`` is stored as a JSON string so the schema stays fixed whatever keys a source brings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa

from tunesmith.data.example import Example

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
EXAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("text", pa.string()),
        ("meta", pa.string()),
    ]
)


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys): equal objects give equal strings, hence equal hashes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def to_table(examples: Iterable[Example]) -> pa.Table:
    ids, messages, texts, metas = [], [], [], []
    for ex in examples:
        ids.append(ex.id)
        messages.append(ex.messages)
        texts.append(ex.text)
        metas.append(dumps(ex.meta))
    return pa.table([ids, messages, texts, metas], schema=EXAMPLE_SCHEMA)


def from_table(table: pa.Table | pa.RecordBatch) -> list[Example]:
    cols = table.select(["id", "messages", "text", "meta"]).to_pydict()
    return [
        Example(i, m or [], t, orjson.loads(meta) if meta else {})
        for i, m, t, meta in zip(cols["id"], cols["messages"], cols["text"], cols["meta"], strict=True)
    ]
