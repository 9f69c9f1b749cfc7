"""Model names -> versions: the deployment, aliases (live), version ids, base, and 404s."""

from __future__ import annotations

import pytest

from tunesmith.serve.catalog import ModelCatalog
from tunesmith.serve.errors import APIError


def where(route):
    return route.version, route.adapter, route.variant


def catalog(aliases=None, **kw):
    current = {} if aliases is None else aliases
    return ModelCatalog("acme", {"v1": 1.0, "v2": 2.0}, champion="v2", aliases=lambda: current, **kw), current


def test_names_resolve_to_versions_and_variants():
    cat, aliases = catalog()
    assert where(cat.resolve("acme")) == ("v2", "v2", "champion")
    assert where(cat.resolve("v1")) == ("v1", "v1", "direct")
    assert where(cat.resolve("base")) == ("base", None, "direct")
    aliases.update(champion="v1", challenger="v2")  # moved while serving
    assert where(cat.resolve("acme")) == ("v1", "v1", "champion")
    assert where(cat.resolve("acme@challenger")) == ("v2", "v2", "challenger")
    assert [c.id for c in cat.cards()] == ["acme", "acme@challenger", "acme@champion", "v1", "v2", "base"]


def test_a_pinned_champion_ignores_the_alias():
    cat, _ = catalog({"champion": "v1"}, pinned=True)
    assert cat.resolve("acme").version == "v2" and cat.resolve("acme@champion").version == "v1"


@pytest.mark.parametrize(("name", "aliases", "match"), [
    ("gpt-4o", {}, "does not exist on this server"),
    ("acme@nope", {}, "does not exist"),
    ("acme@canary", {"canary": "v9"}, "has not loaded"),
])
def test_unknown_names_are_404s(name, aliases, match):
    cat, _ = catalog(aliases)
    with pytest.raises(APIError, match=match) as info:
        cat.resolve(name)
    assert info.value.status == 404 and info.value.param == "model"


def test_a_broken_alias_source_falls_back_to_the_started_champion():
    def broken():
        raise RuntimeError("database is locked")

    cat = ModelCatalog("acme", {"v1": 1.0}, champion="v1", aliases=broken)
    assert cat.resolve("acme").version == "v1"


def test_the_registrys_alias_moves_reach_a_running_catalog(tmp_path):
    from tunesmith.registry import ModelRegistry
    from tunesmith.serve.launch import registry_aliases
    from tunesmith.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    for vid in ("v1", "v2"):
        with ws.staging() as staged:
            (staged / "model_version.json").write_text("{}")
            ws.publish(staged, "model", vid)
    cat = ModelCatalog("acme", {"v1": 1.0, "v2": 2.0}, champion="v2", aliases=registry_aliases(ws, "acme", ttl=0))
    assert cat.resolve("acme").version == "v2"  # no alias yet: the latest
    ModelRegistry(ws, "acme").promote("v1", force=True, reason="test", by="test")
    assert cat.resolve("acme").version == "v1" and cat.resolve("acme@champion").version == "v1"
