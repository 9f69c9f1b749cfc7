"""The alias ledger: append-only rows, the current table derived from them, rollback's stack."""

import sqlite3

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.registry.ledger import AliasLedger, Gate, held_before
from tunesmith.workspace import Workspace


def test_rows_are_append_only_and_the_current_table_is_derived(tmp_path):
    ledger = AliasLedger(Workspace(tmp_path))
    ledger.append("champion", "a", expected_from=None, action="promote", by="ann", gate=Gate("e1", "p1", True))
    ledger.append("champion", "b", expected_from="a", action="promote", by="bob", reason="better")
    ledger.append("challenger", "c", expected_from=None, action="promote", by="bob")
    assert ledger.current() == {"challenger": "c", "champion": "b"}
    with sqlite3.connect(tmp_path / "tunesmith.db") as db:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE alias_moves SET to_model = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM alias_moves")
    first, second = ledger.moves(alias="champion")
    assert (first.by, first.from_model, first.to_model, first.gate_eval, first.gate_passed) == ("ann", None, "a", "e1", True)
    assert (second.from_model, second.reason, second.gate_passed) == ("a", "better", None)
    assert [m.seq for m in ledger.moves(model_id="a")] == [first.seq, second.seq]


def test_a_move_based_on_a_stale_view_is_refused(tmp_path):
    ledger = AliasLedger(Workspace(tmp_path))
    ledger.append("champion", "a", expected_from=None, action="promote", by="ann")
    with pytest.raises(TunesmithError, match="moved to a while this command ran"):
        ledger.append("champion", "b", expected_from=None, action="promote", by="bob")
    assert len(ledger.moves()) == 1


def test_rollback_walks_back_through_the_versions_held():
    class M:
        def __init__(self, action, to):
            self.action, self.to_model = action, to

    assert held_before([M("promote", "a"), M("promote", "b"), M("promote", "c")]) == ["a", "b", "c"]
    # after a rollback to b, the next rollback goes to a, not back to c
    assert held_before([M("promote", "a"), M("promote", "b"), M("promote", "c"), M("rollback", "b")]) == ["a", "b"]
    assert held_before([M("promote", "a"), M("promote", "b"), M("rollback", "a"), M("promote", "c")]) == ["a", "c"]
