"""Who may use the web UI, and as what: keys with roles, signed session cookies, CSRF tokens.

Keys come from ``TUNESMITH_UI_KEYS`` (comma-separated ``role:key`` or ``role:key:name``) and/or a
key file (one ``role key [name]`` per line; blank lines and ``#`` comments skipped). Roles:

    reviewer   reads every page, decides review items
    admin      also promotes, rolls back and changes the rollout

A reviewer's name (the audit trail's ``by``) is the ``name`` given with the key, else
``<role>-<first 6 hex of the key's sha256>``, so two reviewers with two keys never share one.

A login exchanges a key for a session cookie signed with ``itsdangerous`` (the secret from
``TUNESMITH_UI_SECRET``, else a random one per process: restarting the UI logs everyone out).
The cookie holds the key's fingerprint, never the key: removing a key from the list ends its
sessions at their next request. Sessions expire after ``max_age`` seconds (12 h by default).
Each session carries a random CSRF token that every form posts back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from tunesmith.errors import TunesmithError

KEYS_ENV = "TUNESMITH_UI_KEYS"
KEY_FILE_ENV = "TUNESMITH_UI_KEY_FILE"
SECRET_ENV = "TUNESMITH_UI_SECRET"
ROLES = ("reviewer", "admin")
MIN_KEY_LENGTH = 16
COOKIE = "tunesmith_ui"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True, slots=True)
class User:
    role: str
    name: str
    fingerprint: str  # sha256 of the key, hex: what the session cookie names

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _user(role: str, key: str, name: str | None, where: str) -> tuple[str, User]:
    role = role.strip().lower()
    if role not in ROLES:
        raise TunesmithError(f"{where}: unknown role {role!r}; one of {', '.join(ROLES)}")
    if len(key) < MIN_KEY_LENGTH:
        raise TunesmithError(f"{where}: the {role} key is shorter than {MIN_KEY_LENGTH} characters; use a long "
                             "random key (e.g. `openssl rand -hex 24`)")
    fp = fingerprint(key)
    return key, User(role, (name or "").strip() or f"{role}-{fp[:6]}", fp)


class UiKeys:
    """The accepted keys and the user each one logs in as."""

    def __init__(self, users: list[tuple[str, User]]):
        if not users:
            raise TunesmithError(
                f"no UI key configured: set {KEYS_ENV}=\"admin:KEY1,reviewer:KEY2\" or pass --key-file FILE "
                "(lines `role key [name]`); roles: " + ", ".join(ROLES))
        self._users = users
        self._by_fp = {u.fingerprint: u for _, u in users}

    @classmethod
    def parse(cls, env_value: str = "", file_text: str = "", file_name: str = "key file") -> UiKeys:
        users = []
        for n, entry in enumerate(e.strip() for e in env_value.split(",")):
            if not entry:
                continue
            parts = entry.split(":")
            if len(parts) not in (2, 3):
                raise TunesmithError(f"{KEYS_ENV} entry {n + 1}: write role:key or role:key:name, got "
                                     f"{len(parts)} ':'-separated parts")
            users.append(_user(parts[0], parts[1].strip(), parts[2] if len(parts) == 3 else None,
                               f"{KEYS_ENV} entry {n + 1}"))
        for n, line in enumerate(file_text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) not in (2, 3):
                raise TunesmithError(f"{file_name} line {n}: write `role key [name]`, got {len(parts)} words")
            users.append(_user(parts[0], parts[1], parts[2] if len(parts) == 3 else None, f"{file_name} line {n}"))
        return cls(users)

    @classmethod
    def load(cls, *, key_file: Path | None = None, environ: dict[str, str] | None = None) -> UiKeys:
        """Keys from ``TUNESMITH_UI_KEYS`` and the key file (``key_file``, else
        ``TUNESMITH_UI_KEY_FILE``), together.

        Raises:
            TunesmithError: an unreadable file, an unknown role, a short key, or no key at all.
        """
        env = os.environ if environ is None else environ
        path = key_file or (Path(env[KEY_FILE_ENV]) if env.get(KEY_FILE_ENV) else None)
        text = ""
        if path is not None:
            try:
                text = Path(path).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise TunesmithError(f"UI key file {path}: cannot read it ({exc.strerror})") from None
        return cls.parse(env.get(KEYS_ENV, ""), text, str(path))

    def login(self, presented: str) -> User | None:
        """The user of a key (compared with every key in constant time), or None."""
        given = presented.strip().encode()
        found = None
        for key, user in self._users:  # every key, always: the time says nothing about which matched
            if hmac.compare_digest(given, key.encode()):
                found = user
        return found

    def user(self, fp: str) -> User | None:
        return self._by_fp.get(fp)


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf: str


class Sessions:
    """Signed, expiring session cookies (``itsdangerous``)."""

    def __init__(self, keys: UiKeys, *, secret: str | None = None, max_age: int = SESSION_SECONDS):
        secret = secret or os.environ.get(SECRET_ENV) or secrets.token_hex(32)
        self.keys, self.max_age = keys, max_age
        self._signer = URLSafeTimedSerializer(secret, salt="tunesmith-ui-session")

    def issue(self, user: User) -> str:
        return self._signer.dumps({"fp": user.fingerprint, "csrf": secrets.token_urlsafe(24)})

    def read(self, cookie: str | None) -> tuple[Session | None, str | None]:
        """(the session, None) or (None, why not: ``expired`` | ``invalid`` | ``revoked`` | None
        when there is no cookie)."""
        if not cookie:
            return None, None
        try:
            data = self._signer.loads(cookie, max_age=self.max_age)
        except SignatureExpired:
            return None, "expired"
        except BadSignature:
            return None, "invalid"
        user = self.keys.user(str(data.get("fp", "")))
        if user is None:
            return None, "revoked"
        return Session(user, str(data.get("csrf", ""))), None


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())
