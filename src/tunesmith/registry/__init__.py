"""The model registry: model versions with their lineage, aliases and their ledger, model cards.

    model_registry.py   ModelRegistry: list, show, promote (gated), rollback, card
    versions.py         read versions, evals and lineage from what the stages wrote
    ledger.py           the append-only alias ledger (SQLite, in the workspace database)
    mlflow_mirror.py    the same versions and aliases in MLflow's model registry (optional)
    card.py             the Markdown model card
    records.py          the typed records handed to the CLI
"""

from tunesmith.registry.model_registry import ModelRegistry, check_alias
from tunesmith.registry.records import (
    AliasChange,
    AliasMove,
    EvalSummary,
    ExportInfo,
    GateVerdict,
    VersionDetail,
    VersionSummary,
    to_json,
)

__all__ = ["AliasChange", "AliasMove", "EvalSummary", "ExportInfo", "GateVerdict", "ModelRegistry", "VersionDetail",
           "VersionSummary", "check_alias", "to_json"]
