"""Errors a user can act on. The CLI prints them without a traceback."""

from __future__ import annotations

from typing import Any


class TunesmithError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


class ConfigError(TunesmithError):
    """One or more problems in the config, all reported together."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s){where}:\n{lines}")


class AccountingError(TunesmithError):
    """read != kept + dropped + quarantined: a record went missing. Always a bug."""


class MissingDependencyError(TunesmithError):
    """An optional dependency is needed for the configured step; the message says how to get it."""

    def __init__(self, package: str, extra: str, purpose: str, *, install: str | None = None):
        self.packages = [package]
        install = install or f"pip install 'tunesmith[{extra}]'"
        super().__init__(f"{purpose} needs the '{package}' package. Install it with `{install}`.")

    @classmethod
    def for_requirements(cls, requirements: list[Any]) -> MissingDependencyError:
        """One error for several missing packages (``tunesmith.deps.Requirement``), one line each."""
        first = requirements[0]
        err = cls(first.package, "", first.purpose, install=first.install)
        if len(requirements) > 1:
            err.packages = [r.package for r in requirements]
            lines = "\n".join(f"  - {r.package} (for {r.purpose}): `{r.install}`" for r in requirements)
            err.args = (f"{len(requirements)} packages this config needs are not installed:\n{lines}",)
        return err
