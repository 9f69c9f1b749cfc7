"""Mirror model versions and aliases into MLflow's model registry (optional).

The workspace ledger stays the source of truth; MLflow gets a copy so that MLflow users and tools
(``models:/<project>@champion``) see the same thing. One registered model per project; one MLflow
version per tunesmith version, found again by its ``tunesmith.model_id`` tag; the snapshot digest
(the snapshot id, a content hash) as a tag. MLflow keeps only where an alias points now, so after
every move the mirror sets each ledger alias to its current version.

The store is the one training tracks to (``train.tracking.mlflow_uri``, default the SQLite file
``<workspace>/mlflow.db``); the client is built for that URI, never through mlflow's global state.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.registry.records import MirrorResult
from tunesmith.workspace import Artifact, Workspace

MODEL_ID_TAG = "tunesmith.model_id"
SNAPSHOT_TAG = "tunesmith.snapshot_digest"


def mlflow_available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def registered_model_name(project: str) -> str:
    """MLflow model names cannot contain '/' or ':'."""
    return project.replace("/", "-").replace(":", "-").strip() or "tunesmith-project"


@dataclass
class MlflowMirror:
    tracking_uri: str
    name: str

    @classmethod
    def for_workspace(cls, ws: Workspace, project: str, uri: str | None = None) -> MlflowMirror:
        return cls(uri or f"sqlite:///{(ws.root / 'mlflow.db').resolve()}", registered_model_name(project))

    def _client(self) -> Any:
        from mlflow import MlflowClient

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def sync(self, versions: Iterable[tuple[Artifact, dict[str, Any]]], aliases: dict[str, str]) -> MirrorResult:
        """Register every version MLflow does not have yet, then point each alias where the ledger
        says. ``versions``: (model artifact, its model_version.json) pairs."""
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_registered_model(self.name, description="Model versions registered by tunesmith.")
        known = {v.tags.get(MODEL_ID_TAG): int(v.version)
                 for v in client.search_model_versions(f"name = '{self.name}'") if v.tags.get(MODEL_ID_TAG)}
        for art, record in versions:
            if art.id not in known:
                known[art.id] = self._register(client, art, record)
        current = client.get_registered_model(self.name).aliases
        mirrored = {}
        for alias, model_id in aliases.items():
            if model_id not in known:
                continue  # a version missing from this workspace; nothing to point at
            mirrored[alias] = known[model_id]
            if current.get(alias) != known[model_id]:
                client.set_registered_model_alias(self.name, alias, str(known[model_id]))
        return MirrorResult(self.name, self.tracking_uri, known, mirrored)

    def _register(self, client: Any, art: Artifact, record: dict[str, Any]) -> int:
        tags = {MODEL_ID_TAG: art.id, SNAPSHOT_TAG: record.get("snapshot") or "",
                "tunesmith.base_model": record.get("base_model") or "", "tunesmith.method": record.get("method") or "",
                "tunesmith.config_hash": record.get("config_hash") or ""}
        run_id = _run_id(client, record)
        mv = client.create_model_version(
            self.name, source=Path(art.path).resolve().as_uri(), run_id=run_id, tags=tags, await_creation_for=0,
            description=f"tunesmith model version {art.id}: {record.get('method')} on {record.get('base_model')}, "
                        f"snapshot {record.get('snapshot')}")
        return int(mv.version)


def _run_id(client: Any, record: dict[str, Any]) -> str | None:
    """The training run's MLflow id, when the run exists in this store."""
    from mlflow.exceptions import MlflowException

    state = Path(record["run_dir"]) / "mlflow_run_id" if record.get("run_dir") else None
    if state is None or not state.exists():
        return None
    run_id = state.read_text().strip()
    try:
        client.get_run(run_id)
    except MlflowException:
        return None
    return run_id
