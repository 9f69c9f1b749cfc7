"""API keys: where they come from, what is refused at start-up, how they are checked."""

from __future__ import annotations

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.serve.auth import KEYS_ENV, ApiKeys

A, B = "a" * 20, "b" * 24


def test_keys_come_from_the_environment_and_the_key_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# team keys\n{B}\n\n")
    keys = ApiKeys.load(key_file=path, environ={KEYS_ENV: f" {A} ,"})
    assert keys.enabled and keys.accepts(A) and keys.accepts(B)
    assert not keys.accepts("a" * 19) and not keys.accepts("")


def test_no_key_short_keys_and_unreadable_files_are_refused(tmp_path):
    with pytest.raises(TunesmithError, match=r"no API key configured.*--no-auth"):
        ApiKeys.load(environ={})
    with pytest.raises(TunesmithError, match="shorter than 16"):
        ApiKeys.load(environ={KEYS_ENV: "short"})
    with pytest.raises(TunesmithError, match="cannot read it"):
        ApiKeys.load(key_file=tmp_path / "missing", environ={})
    assert not ApiKeys.disabled().enabled and ApiKeys.disabled().accepts("anything")
