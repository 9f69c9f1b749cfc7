"""``tunesmith serve``: load the base model and every model version, build the app, run uvicorn.

The base model (``model.base``) loads once; each model version in the workspace is attached as
an adapter named by its id (a full fine-tune loads as a second model). A version the engine
cannot attach (trained on another base, prompt tuning) is skipped with a warning, unless it is
the one the deployment name must serve.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunesmith.errors import TunesmithError
from tunesmith.serve.auth import ApiKeys
from tunesmith.serve.catalog import AliasResolver, ModelCatalog, no_aliases

if TYPE_CHECKING:
    from fastapi import FastAPI

    from tunesmith.config import Config
    from tunesmith.generate.engine import Engine
    from tunesmith.serve.rollout import Rollout
    from tunesmith.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """What ``build_app`` loaded, for the start-up message."""

    app: FastAPI
    engine: Engine
    catalog: ModelCatalog
    skipped: dict[str, str]  # version id -> why it is not served


def load_engine(cfg: Config) -> Engine:
    """The base model, with the eval stage's generation settings (batch size, drafts, precision)."""
    from tunesmith.generate.engine import Engine, engine_options
    from tunesmith.train.recipe import model_reference

    return Engine.load(model_reference(cfg), **engine_options(cfg), trust_remote_code=cfg.model.trust_remote_code,
                       allow_pickle=cfg.model.allow_pickle)


def attach_versions(engine: Engine, ws: Workspace, required: str | None = None
                    ) -> tuple[dict[str, float], dict[str, str]]:
    """Attach every model version as an adapter named by its id: (served id -> created,
    skipped id -> why). Only ``required`` must load; any other failure is a skip."""
    from tunesmith.generate.adapters import AdapterError

    served, skipped = {}, {}
    for version in ws.list("model"):
        try:
            engine.add_adapter(version.id, version.path)
        except (AdapterError, OSError, ValueError) as exc:
            if version.id == required:
                raise TunesmithError(f"model version {version.id} cannot be served: {exc}") from exc
            skipped[version.id] = str(exc).splitlines()[0][:200]
            continue
        served[version.id] = version.created
    return served, skipped


def registry_aliases(ws: Workspace, project: str, *, ttl: float = 1.0) -> AliasResolver:
    """The model registry's current ``{alias: version id}`` (its alias ledger), read at most once
    per ``ttl`` seconds, so a promotion or rollback reaches the server within a second. Without
    the registry package: no aliases."""
    try:
        from tunesmith.registry import ModelRegistry
    except ImportError:
        return no_aliases
    registry = ModelRegistry(ws, project)
    cache: dict[str, str] = {}
    read_at = -ttl
    lock = threading.Lock()

    def aliases() -> dict[str, str]:
        nonlocal cache, read_at
        with lock:
            if time.monotonic() - read_at >= ttl:
                cache, read_at = registry.aliases(), time.monotonic()
            return cache

    return aliases


def log_scrubber(cfg: Config) -> Callable[[str], str]:
    """The prepare stage's PII scrubber with the project's settings and its per-workspace salt
    (pseudonyms in the request log match the snapshot's)."""
    from tunesmith.data.pipeline import _salt  # the workspace secret the prepare stage uses
    from tunesmith.serve.requestlog import pii_scrubber

    return pii_scrubber(cfg.data.pii, _salt(cfg))


def canary_rollout(cfg: Config, ws: Workspace, catalog: ModelCatalog) -> Rollout:
    """The rollout of ``serve.rollout`` over the catalog's aliases. Built even when the config
    says ``off``: ``tunesmith rollout set`` may switch a running server to shadow or canary."""
    from tunesmith.serve.rollout import Rollout, RolloutEvents

    return Rollout(cfg.serve.rollout, catalog._aliases, catalog.versions, events=RolloutEvents(ws.db_path),
                   salt=cfg.project, promoter=registry_promoter(cfg))


def registry_promoter(cfg: Config) -> Callable[[str, str], object] | None:
    """``promote_after``'s promotion: the registry's gated promote of the champion alias, ``by:
    rollout`` (the same ledger row as `tunesmith promote`). None without the registry."""
    try:
        from tunesmith.registry import ModelRegistry
    except ImportError:
        return None

    def promote(version: str, reason: str) -> object:
        return ModelRegistry.from_config(cfg).promote(version, "champion", reason=reason, by="rollout")

    return promote


def build_app(cfg: Config, *, keys: ApiKeys, model: str | None = None, max_queue: int = 128,
              default_max_tokens: int | None = None, aliases: AliasResolver | None = None) -> Loaded:
    """Load everything and build the app (not yet running).

    Args:
        cfg: the project config.
        keys: the accepted API keys (``ApiKeys.disabled()`` for none).
        model: the version the deployment name serves (id or prefix), whatever the aliases say;
            default the ``champion`` alias, else the latest version that loads, else the base.
        max_queue: requests allowed to wait for the engine.
        default_max_tokens: answer budget when a request names none.
        aliases: the alias resolver (default: the registry's, or none).

    Raises:
        TunesmithError: an unknown ``--model``, or a champion that cannot be loaded.
    """
    from tunesmith.data.pipeline import input_shaper
    from tunesmith.generate.openmp import release_thread_pool
    from tunesmith.review.live import answer_reviewer
    from tunesmith.serve.app import create_app
    from tunesmith.serve.cache import ResponseCache
    from tunesmith.serve.requestlog import RequestLog
    from tunesmith.serve.service import DEFAULT_MAX_TOKENS, ChatService
    from tunesmith.workspace import Workspace

    if cfg.serve.engine == "vllm":  # a `vllm serve` child generates; routing, auth, logs stay here
        from tunesmith.serve.vllm import build_vllm_app

        return build_vllm_app(cfg, keys=keys, model=model, max_queue=max_queue,
                              default_max_tokens=default_max_tokens, aliases=aliases)
    ws = Workspace(cfg.workspace_dir)
    pinned = ws.get("model", model).id if model else None
    scrub = log_scrubber(cfg)  # before the model loads: a missing spaCy model fails in seconds
    engine = load_engine(cfg)
    served, skipped = attach_versions(engine, ws, pinned)
    champion = pinned or max(served, key=lambda v: served[v], default=None)  # else the latest that loads
    catalog = ModelCatalog(cfg.project, served, champion=champion, pinned=pinned is not None,
                           aliases=aliases or registry_aliases(ws, cfg.project),
                           created=time.time())
    request_log = RequestLog(ws.db_path, scrub=scrub)
    service = ChatService(engine, catalog, request_log=request_log, max_queue=max_queue,
                          default_max_tokens=default_max_tokens or DEFAULT_MAX_TOKENS,
                          rollout=canary_rollout(cfg, ws, catalog),
                          cache=ResponseCache(cfg.serve.cache.max_entries),
                          reviewer=answer_reviewer(cfg, ws, engine),
                          batch_wait=cfg.serve.batch_wait_ms / 1000, shape=input_shaper(cfg))
    app = create_app(service, keys=keys, metrics_require_key=cfg.serve.metrics.require_key)
    # from here on the engine's worker thread runs the model: this thread's OpenMP team would
    # only slow the worker's (generate/openmp.py)
    release_thread_pool()
    return Loaded(app, engine, catalog, skipped)


def run(app: FastAPI, *, host: str, port: int) -> None:
    """Serve until Ctrl-C (uvicorn stops gracefully: running answers finish, waiting ones get 503)."""
    import uvicorn

    ours = logging.getLogger("tunesmith")
    if not ours.handlers:  # uvicorn configures its own loggers only; show ours beside them
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
