"""API keys: ``Authorization: Bearer <key>`` on every ``/v1`` route.

Keys come from the environment (``TUNESMITH_API_KEYS``, comma-separated) and/or a key file (one
key per line; blank lines and ``#`` comments skipped). The server refuses to start with no key
at all unless auth is switched off explicitly (``--no-auth``). Keys are compared with
``hmac.compare_digest`` against every configured key, so the time taken does not reveal how
much of a guess was right, nor which key it was close to.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import Request

from tunesmith.errors import TunesmithError
from tunesmith.serve.errors import APIError

KEYS_ENV = "TUNESMITH_API_KEYS"
MIN_KEY_LENGTH = 16  # a short key is guessable; `openssl rand -hex 24` makes a good one


class ApiKeys:
    """The accepted keys (``None``: auth is off, every request is let in)."""

    def __init__(self, keys: list[str] | None):
        if keys is not None and not keys:
            raise TunesmithError(
                f"no API key configured: set {KEYS_ENV} (comma-separated) or pass --api-key-file FILE; "
                "or pass --no-auth to serve without keys (only on a trusted network)"
            )
        self._keys = None if keys is None else [k.encode() for k in keys]

    @classmethod
    def disabled(cls) -> ApiKeys:
        return cls(None)

    @classmethod
    def load(cls, *, key_file: Path | None = None, environ: dict[str, str] | None = None) -> ApiKeys:
        """Keys from ``TUNESMITH_API_KEYS`` and the key file, together.

        Raises:
            TunesmithError: the file cannot be read, a key is too short, or there is no key.
        """
        env = os.environ if environ is None else environ
        keys = [k.strip() for k in env.get(KEYS_ENV, "").split(",") if k.strip()]
        if key_file is not None:
            try:
                lines = Path(key_file).expanduser().read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise TunesmithError(f"--api-key-file {key_file}: cannot read it ({exc.strerror})") from None
            keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        short = [k for k in keys if len(k) < MIN_KEY_LENGTH]
        if short:
            raise TunesmithError(
                f"{len(short)} API key(s) shorter than {MIN_KEY_LENGTH} characters; use long random keys "
                "(e.g. `openssl rand -hex 24`)"
            )
        return cls(list(dict.fromkeys(keys)))

    @property
    def enabled(self) -> bool:
        return self._keys is not None

    def accepts(self, presented: str) -> bool:
        if self._keys is None:
            return True
        given = presented.encode()
        matches = [hmac.compare_digest(given, k) for k in self._keys]  # every key, always
        return any(matches)

    def check(self, request: Request) -> None:
        """Raise a 401 unless the request carries an accepted bearer key."""
        if self._keys is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(401, "missing API key: send the header `Authorization: Bearer <key>`",
                           code="missing_api_key")
        if not self.accepts(key.strip()):
            raise APIError(401, "incorrect API key", code="invalid_api_key")
