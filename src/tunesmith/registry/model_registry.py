"""The model registry of one project: list and inspect versions, move aliases, write model cards.

Aliases (``champion``, ``challenger`` or any name) point at model versions, as in MLflow's
registry: an alias names exactly one version, a version may carry several aliases, and moving an
alias is one step. Unlike MLflow, every move is kept (``ledger.py``), which is what ``rollback``
and the audit trail read.

    promote    needs a passed gate: the model's latest eval on the pinned pack (``eval.pack``),
               or on any pack when none is pinned. ``force`` + a reason overrides; both are recorded.
    rollback   moves an alias back to the version it held before the current one.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from typing import Any

from tunesmith.config import Config
from tunesmith.errors import TunesmithError
from tunesmith.registry.ledger import AliasLedger, Gate, held_before
from tunesmith.registry.mlflow_mirror import MlflowMirror, mlflow_available
from tunesmith.registry.records import (
    AliasChange,
    AliasMove,
    GateVerdict,
    MirrorResult,
    VersionDetail,
    VersionSummary,
)
from tunesmith.registry.versions import (
    eval_summary,
    evals_of,
    exports_of,
    gate_eval,
    gate_verdict,
    resolve_pack,
    snapshot_info,
    training_run,
    version_record,
)
from tunesmith.workspace import Artifact, Workspace

# MLflow's alias rules (so that every alias can be mirrored), starting with a letter so that an
# alias never reads as a version id; "latest" and v<number> are reserved by MLflow.
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias or "") or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise TunesmithError(
            f"invalid alias '{alias}': use a letter followed by letters, digits, '_' or '-' (at most 64), "
            "not 'latest' or v<number> (MLflow reserves those); e.g. champion, challenger")
    return alias


def current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no USER variable (some containers)
        return os.environ.get("USERNAME") or f"uid-{os.getuid()}"


def _short(model_id: str | None) -> str:
    return model_id[:12] if model_id else "(none)"


@dataclass
class ModelRegistry:
    ws: Workspace
    project: str
    pinned_pack: str | None = None  # eval.pack: the pack whose gate promotions need
    mirror: MlflowMirror | None = None

    def __post_init__(self) -> None:
        self.ledger = AliasLedger(self.ws)

    @classmethod
    def from_config(cls, cfg: Config) -> ModelRegistry:
        ws = Workspace(cfg.workspace_dir)
        tracking = cfg.train.tracking
        mirror = (MlflowMirror.for_workspace(ws, cfg.project, tracking.mlflow_uri)
                  if tracking.mlflow and mlflow_available() else None)
        return cls(ws, cfg.project, resolve_pack(ws, cfg.eval.pack), mirror)

    # ------------------------------------------------------------------ reading
    def aliases(self) -> dict[str, str]:
        return self.ledger.current()

    def resolve(self, ref: str) -> Artifact:
        """A model version by id, unambiguous id prefix, alias, ``@alias`` or ``<project>@alias``."""
        ref = ref.strip()
        aliases = self.aliases()
        if "@" in ref:
            name, _, alias = ref.rpartition("@")
            if name and name != self.project:
                raise TunesmithError(f"'{ref}' names project '{name}', but this workspace is '{self.project}'")
            if alias not in aliases:
                raise TunesmithError(f"no alias '{alias}' in {self.ws.root} ({_known(aliases)})")
            return self.ws.get("model", aliases[alias])
        by_id = [a for a in self.ws.list("model") if a.id.startswith(ref)] if ref else []
        if ref in aliases:
            if clash := [a.id for a in by_id if a.id != aliases[ref]]:
                raise TunesmithError(f"'{ref}' is both an alias and the start of version {_short(clash[0])}; "
                                     f"write '@{ref}' for the alias or more characters of the id")
            return self.ws.get("model", aliases[ref])
        if not by_id:
            latest = ", ".join(_short(a.id) for a in self.ws.list("model")[-5:]) or "none yet"
            raise TunesmithError(f"no model version or alias '{ref}' in {self.ws.root} "
                                 f"(latest versions: {latest}; {_known(aliases)})")
        return self.ws.get("model", ref)  # raises on an ambiguous prefix

    def versions(self) -> list[VersionSummary]:
        """Every model version, oldest first, with the eval its gate is read from."""
        aliases, evals = self.aliases(), self.ws.list("eval")
        return [self._summary(art, aliases, [e for e in evals if e.meta.get("model") == art.id])
                for art in self.ws.list("model")]

    def _summary(self, art: Artifact, aliases: dict[str, str], evals: list[Artifact] | None = None, *,
                 details: bool = False) -> VersionSummary:
        record = version_record(art)
        chosen = gate_eval(self.ws, art.id, self.pinned_pack, evals=evals)
        return VersionSummary(art.id, art.created, record.get("base_model"), record.get("method"),
                              record.get("snapshot"), eval_summary(self.ws, chosen, details=details) if chosen else None,
                              sorted(a for a, m in aliases.items() if m == art.id))

    def show(self, ref: str) -> VersionDetail:
        """The lineage of one version: source files → snapshot → training run → version → evals
        per pack → every alias move that touched it, and its published exports."""
        art = self.resolve(ref)
        record = version_record(art)
        evals: dict[str, list] = {}
        for e in evals_of(self.ws, art.id):
            evals.setdefault(e.meta.get("pack", ""), []).append(eval_summary(self.ws, e, details=True))
        return VersionDetail(self._summary(art, self.aliases(), details=True), art.path, record.get("base_fingerprint"), record.get("tunesmith"),
                             snapshot_info(self.ws, record.get("snapshot")), training_run(record), evals,
                             self.ledger.moves(model_id=art.id), exports_of(self.ws, art.id))

    # ------------------------------------------------------------------ moving aliases
    def promote(self, ref: str, alias: str = "champion", *, force: bool = False, reason: str | None = None,
                by: str | None = None) -> AliasChange:
        """Point ``alias`` at a version whose gate passed (or, with ``force``, any version, and the
        reason is recorded). Promoting to the version the alias already names writes nothing."""
        check_alias(alias)
        reason = (reason or "").strip() or None
        if force and not reason:
            raise TunesmithError("--force needs --reason \"...\": the ledger records why the gate was overridden")
        art = self.resolve(ref)
        previous = self.aliases().get(alias)
        verdict = gate_verdict(self.ws, art.id, self.pinned_pack)
        if previous == art.id:
            return AliasChange(alias, art.id, previous, None, verdict)
        if not verdict.passed and not force:
            raise TunesmithError(_refusal(art.id, alias, verdict))
        move = self.ledger.append(alias, art.id, expected_from=previous, action="promote", by=by or current_user(),
                                  reason=reason, forced=force and not verdict.passed,
                                  gate=Gate(verdict.eval_id, verdict.pack, verdict.passed if verdict.eval_id else None))
        return AliasChange(alias, art.id, previous, move, verdict, self._mirror())

    def rollback(self, alias: str = "champion", *, reason: str | None = None, by: str | None = None) -> AliasChange:
        """Move ``alias`` back to the version it held before the current one."""
        check_alias(alias)
        moves = self.ledger.moves(alias=alias)
        if not moves:
            raise TunesmithError(f"alias '{alias}' has never been set, so there is nothing to roll back "
                                 f"({_known(self.aliases())}); set it with `tunesmith promote ID --alias {alias}`")
        stack = held_before(moves)
        if len(stack) < 2:
            raise TunesmithError(
                f"alias '{alias}' has no earlier version to roll back to: {_short(stack[-1])} is the first "
                f"version it held (rollback walks back through earlier versions, never forward); promote "
                f"another version instead")
        current, target = stack[-1], stack[-2]
        move = self.ledger.append(alias, target, expected_from=current, action="rollback",
                                  by=by or current_user(), reason=(reason or "").strip() or None)
        return AliasChange(alias, target, current, move, None, self._mirror())

    def history(self, alias: str | None = None) -> list[AliasMove]:
        return self.ledger.moves(alias=alias)

    def sync_mlflow(self) -> MirrorResult | None:
        """Register every version (and the current aliases) in MLflow's model registry, when
        MLflow tracking is on; training calls it as each version is published."""
        return self._mirror()

    def _mirror(self) -> MirrorResult | None:
        """Copy versions and aliases to MLflow. A failure there never undoes the recorded move:
        it is reported, and the next move syncs again."""
        if self.mirror is None:
            return None
        try:
            versions = [(a, version_record(a)) for a in self.ws.list("model")]
            return self.mirror.sync(versions, self.aliases())
        except Exception as exc:  # MLflow store unreachable, schema mismatch, ...
            return MirrorResult(self.mirror.name, self.mirror.tracking_uri, error=f"{type(exc).__name__}: {exc}")

    def card(self, ref: str) -> str:
        from tunesmith.registry.card import model_card

        return model_card(self.show(ref), project=self.project)


def _known(aliases: dict[str, str]) -> str:
    return "aliases: " + (", ".join(sorted(aliases)) if aliases else "none set yet")


def _refusal(model_id: str, alias: str, verdict: GateVerdict) -> str:
    override = f"to promote it anyway: `tunesmith promote {model_id[:12]} --alias {alias} --force --reason \"...\"`"
    which = f"pinned eval pack {verdict.pack} (eval.pack)" if verdict.pinned else "any eval pack"
    if verdict.eval_id is None:
        run = f"tunesmith eval --model {model_id[:12]}"
        return (f"cannot promote {model_id[:12]} to '{alias}': it has no eval on {which}; run `{run}` first, "
                f"or {override}")
    failed = verdict.failed_checks
    detail = "; ".join(f"{c.name} ({_fmt(c.value)} vs threshold {_fmt(c.threshold)}: {c.detail})" for c in failed)
    return (f"cannot promote {model_id[:12]} to '{alias}': its gate failed on eval {verdict.eval_id} "
            f"(pack {verdict.pack}, " + ("the pinned eval.pack" if verdict.pinned else "its latest eval") + "): "
            + (f"{len(failed)} failed check(s): {detail}" if failed else "the eval did not pass")
            + f". Improve the model and re-run the eval, or {override}")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
