"""Which model answers a request: the ``model`` name a client sends, resolved to a model version.

Names a client may send (``GET /v1/models`` lists them):

- the deployment, i.e. the config's ``project``: its champion (variant ``champion``): the
  version the server was started with when it was named (``--model``), else the version the
  alias ``champion`` points at, else the latest version, else the base model;
- ``<deployment>@<alias>``: the version an alias points at, read on every request, so moving an
  alias (promote, rollback) takes effect without a restart;
- a model version id: that version;
- ``base``: the base model without any adapter.

Aliases live in the model registry. Until it exists the resolver is "no aliases"; the server
takes any callable returning the current ``{alias: version id}`` mapping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from tunesmith.errors import TunesmithError
from tunesmith.serve.errors import APIError
from tunesmith.serve.protocol import ModelCard

log = logging.getLogger(__name__)

BASE = "base"
CHAMPION = "champion"

AliasResolver = Callable[[], dict[str, str]]  # the current {alias: model version id}


def no_aliases() -> dict[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: ``version`` is a model version id or ``base``; ``adapter`` the
    engine's adapter name (None = the base model); ``variant`` is recorded in the request log:
    ``champion`` for the deployment name, the alias for ``name@alias``, ``direct`` for a
    version id or ``base``."""

    model: str
    version: str
    adapter: str | None
    variant: str


class ModelCatalog:
    """The servable names, over the versions loaded in the engine.

    Args:
        deployment: the served name (the config's ``project``).
        versions: model version id -> its creation time (unix seconds); each is an engine
            adapter of the same name.
        champion: the version the deployment name serves when no ``champion`` alias exists
            (None: the base model).
        pinned: the deployment name serves ``champion`` even where a ``champion`` alias exists
            (the operator chose the version at start-up).
        aliases: the alias resolver (default: none).
        created: creation time reported for the deployment and ``base``.
    """

    def __init__(self, deployment: str, versions: dict[str, float], *, champion: str | None = None,
                 pinned: bool = False, aliases: AliasResolver = no_aliases, created: float = 0.0):
        if champion is not None and champion not in versions:
            raise ValueError(f"champion {champion!r} is not among the loaded versions {sorted(versions)}")
        if deployment == BASE or deployment in versions or "@" in deployment:
            raise TunesmithError(f"project: {deployment!r} cannot be served as a model name (it is 'base', a "
                                 "version id, or contains '@'); rename the project in tunesmith.yaml")
        self.deployment, self.versions, self.champion = deployment, dict(versions), champion
        self.pinned, self.aliases, self.created = pinned, aliases, created

    def _aliases(self) -> dict[str, str]:
        try:
            return dict(self.aliases())
        except Exception:  # a broken registry must not take the server down: serve the default
            log.exception("reading the model aliases failed; serving without aliases")
            return {}

    def _version(self, version: str | None, model: str, variant: str) -> Route:
        if version is None:
            return Route(model, BASE, None, variant)
        if version not in self.versions:
            raise APIError(404, f"model {model!r} points at version {version}, which this server has not "
                                "loaded; restart `tunesmith serve` to load it", param="model",
                           code="model_not_found")
        return Route(model, version, version, variant)

    def resolve(self, model: str) -> Route:
        """The route for a requested name.

        Raises:
            APIError: 404 for a name this server does not serve.
        """
        if model == BASE:
            return Route(model, BASE, None, "direct")
        if model in self.versions:
            return Route(model, model, model, "direct")
        name, at, alias = model.partition("@")
        if name == self.deployment:
            aliases = self._aliases()
            if not at:
                version = self.champion if self.pinned else aliases.get(CHAMPION, self.champion)
                return self._version(version, model, CHAMPION)
            if alias in aliases:
                return self._version(aliases[alias], model, alias)
        raise APIError(404, f"the model {model!r} does not exist on this server; GET /v1/models lists "
                            f"the names it serves (e.g. {self.deployment!r})", param="model",
                       code="model_not_found")

    def cards(self) -> list[ModelCard]:
        """The deployment, its aliases, every loaded version (oldest first) and ``base``."""
        created = int(self.created)
        cards = [ModelCard(id=self.deployment, created=created)]
        cards += [ModelCard(id=f"{self.deployment}@{a}", created=created) for a in sorted(self._aliases())]
        cards += [ModelCard(id=v, created=int(t)) for v, t in sorted(self.versions.items(), key=lambda kv: kv[1])]
        cards.append(ModelCard(id=BASE, created=created))
        return cards
