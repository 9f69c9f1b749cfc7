"""Errors a user can act on. The CLI prints them without a traceback."""

from __future__ import annotations


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
    """An optional dependency is needed for the configured step."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package. Install it with "
            f"`pip install 'tunesmith[{extra}]'`."
        )
