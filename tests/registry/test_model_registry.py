"""ModelRegistry on synthetic workspaces: listing, lineage, gated promotion, rollback, the ledger."""

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.registry import ModelRegistry, to_json

from .conftest import FakeProject


def registry(project: FakeProject) -> ModelRegistry:
    return ModelRegistry.from_config(project.cfg)


def test_versions_list_every_model_with_the_eval_the_gate_reads(project):
    good, pack = project.version()
    bad, _ = project.version(pack=pack, passed=False)
    untested = project.model(project.snapshot())
    reg = registry(project)
    reg.promote(good, "champion", by="ann")
    rows = {v.id: v for v in reg.versions()}
    assert list(rows) == [good, bad, untested]  # oldest first
    assert rows[good].aliases == ["champion"] and rows[bad].aliases == []
    assert rows[good].eval.passed and rows[bad].eval.passed is False and rows[untested].eval is None
    head = rows[good].eval.headline
    assert (head.metric, head.rung, head.mean, head.low, head.high, head.n) == ("fields_mean", "finetuned", 0.8, 0.74, 0.86, 60)
    row = rows[good].row()
    assert set(row) == {"id", "created", "base_model", "method", "snapshot", "eval_pack", "eval_id", "headline",
                        "gate_passed", "aliases"}
    assert row["eval_pack"] == pack and row["created"].endswith("+00:00") and row["base_model"] == "starter"


def test_show_gives_the_whole_lineage_chain(project):
    snapshot = project.snapshot()
    model_id = project.model(snapshot, mlflow_run_id="run-123")
    pack_a, pack_b = project.pack(snapshot), project.pack(snapshot)
    e1 = project.eval(model_id, pack_a)
    e2 = project.eval(model_id, pack_b, passed=False)
    e3 = project.eval(model_id, pack_a)
    reg = registry(project)
    reg.promote(model_id, by="ann")
    d = reg.show(model_id[:8])
    assert d.snapshot.id == snapshot and d.snapshot.sources[0].sha256 == "ab" * 32
    assert d.snapshot.counts["dropped_by_reason"] == {"exact_dedup:duplicate": 10, "filter:too_short": 5}
    assert d.training.config_hash == "c" * 16 and d.training.mlflow_run_id == "run-123"
    assert d.training.metrics["best_val_loss"] == 0.4321
    assert {p: [e.eval_id for e in evals] for p, evals in d.evals.items()} == {pack_a: [e1, e3], pack_b: [e2]}
    assert d.evals[pack_b][0].failed_checks[0].name == "lift"
    assert d.version.eval.eval_id == e3  # the latest eval on any pack
    assert [(m.alias, m.to_model) for m in d.alias_moves] == [("champion", model_id)]
    data = to_json(d)
    assert data["snapshot"]["sources"][0]["path"] == "data/tickets.jsonl"
    assert data["evals"][pack_a][0]["ladder"]["few_shot"]["mean"] == 0.66


def test_promote_is_refused_without_a_passed_gate(project):
    bad, _ = project.version(passed=False)
    untested = project.model(project.snapshot())
    reg = registry(project)
    with pytest.raises(TunesmithError) as exc:
        reg.promote(bad, "champion")
    msg = str(exc.value)
    assert "gate failed" in msg and "lift" in msg and "significant" in msg and "--force --reason" in msg
    with pytest.raises(TunesmithError, match=r"has no eval on any eval pack.*tunesmith eval --model"):
        reg.promote(untested, "champion")
    assert reg.aliases() == {} and reg.history() == []


def test_the_pinned_pack_decides_the_gate(project):
    snapshot = project.snapshot()
    model_id = project.model(snapshot)
    pinned, other = project.pack(snapshot), project.pack(snapshot)
    project.eval(model_id, pinned, passed=False)
    project.eval(model_id, other, passed=True)  # later and passed, but not on the pinned pack
    assert registry(project).promote(model_id, by="ann").gate.pack == other  # no pin: the latest eval
    project.pin(pinned[:6])
    reg = registry(project)
    assert reg.pinned_pack == pinned
    with pytest.raises(TunesmithError, match=f"pack {pinned}, the pinned eval.pack"):
        reg.promote(model_id, "challenger")


def test_force_needs_a_reason_and_records_it(project):
    good, pack = project.version()
    bad, _ = project.version(pack=pack, passed=False)
    reg = registry(project)
    reg.promote(good, by="ann")
    with pytest.raises(TunesmithError, match="--force needs --reason"):
        reg.promote(bad, force=True)
    change = reg.promote(bad, force=True, reason="  hotfix for ticket 42 ", by="bob")
    assert change.changed and change.previous == good and change.gate.passed is False
    move = reg.history("champion")[-1]
    assert (move.forced, move.reason, move.by, move.gate_passed, move.from_model) == (True, "hotfix for ticket 42", "bob", False, good)


def test_promoting_to_the_current_version_records_nothing(project):
    good, _ = project.version()
    reg = registry(project)
    reg.promote(good, by="ann")
    again = reg.promote(good, by="ann")
    assert not again.changed and again.move is None and len(reg.history()) == 1


def test_rollback_restores_the_previous_version_and_the_ledger_keeps_every_move(project):
    a, pack = project.version()
    b, _ = project.version(pack=pack)
    c, _ = project.version(pack=pack)
    reg = registry(project)
    for model_id in (a, b, c):
        reg.promote(model_id, by="ann")
    reg.promote(a, "challenger", by="ann")
    back = reg.rollback(by="bob", reason="latency regression")
    assert (back.model_id, back.previous) == (b, c) and reg.aliases()["champion"] == b
    assert reg.rollback().model_id == a  # walks further back, does not bounce to c
    with pytest.raises(TunesmithError, match="no earlier version to roll back to"):
        reg.rollback()
    with pytest.raises(TunesmithError, match="alias 'canary' has never been set"):
        reg.rollback("canary")
    moves = reg.history()
    assert [(m.alias, m.action, m.from_model, m.to_model) for m in moves] == [
        ("champion", "promote", None, a), ("champion", "promote", a, b), ("champion", "promote", b, c),
        ("challenger", "promote", None, a), ("champion", "rollback", c, b), ("champion", "rollback", b, a)]
    assert [m.seq for m in moves] == sorted(m.seq for m in moves)
    assert moves[4].by == "bob" and moves[4].reason == "latency regression"
    assert reg.aliases() == {"champion": a, "challenger": a}


def test_unknown_ids_and_aliases_are_clear_errors(project):
    good, _ = project.version()
    reg = registry(project)
    reg.promote(good, by="ann")
    with pytest.raises(TunesmithError, match=r"no model version or alias 'zzz'.*aliases: champion"):
        reg.show("zzz")
    with pytest.raises(TunesmithError, match="no alias 'canary'"):
        reg.promote("@canary", "champion")
    with pytest.raises(TunesmithError, match="invalid alias 'v2'"):
        reg.promote(good, "v2")
    with pytest.raises(TunesmithError, match="invalid alias"):
        reg.promote(good, "prod/eu")
    with pytest.raises(TunesmithError, match="workspace is 'support-triage'"):
        reg.show("other-project@champion")
    assert reg.resolve("champion").id == reg.resolve("@champion").id == reg.resolve("support-triage@champion").id == good


def test_an_alias_that_is_also_an_id_prefix_must_be_spelled_out(project):
    snapshot = project.snapshot()
    pack = project.pack(snapshot)
    cafe = project.model(snapshot, model_id="cafe" + "0" * 16)
    beef = project.model(snapshot, model_id="beef" + "0" * 16)
    for model_id in (cafe, beef):
        project.eval(model_id, pack)
    reg = registry(project)
    reg.promote(beef, "cafe", by="ann")
    with pytest.raises(TunesmithError, match="both an alias and the start of version cafe00000000; write '@cafe'"):
        reg.resolve("cafe")
    assert reg.resolve("@cafe").id == beef and reg.resolve("cafe0").id == cafe
    reg.promote(cafe, "champion", by="ann")
    assert reg.resolve("champion").id == cafe  # no version id starts with "champion"
