"""The simulation's traffic: the project's own server on 127.0.0.1, real HTTP requests, and
each answer read back with the confidence and review decision the server attached.

:class:`LocalServer` runs exactly what ``tunesmith serve`` runs (``serve.launch.build_app``)
under uvicorn in a background thread, on a free loopback port, without API keys (nothing
outside this process can reach it). :func:`replay` sends tickets through it with a bounded
number of concurrent clients, the way a helpdesk integration would, and keeps each response
beside the ticket's ground truth (which never goes over the wire).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tunesmith.config import Config
from tunesmith.errors import TunesmithError
from tunesmith.sample.triage_month2 import TrafficTicket
from tunesmith.workspace import Workspace

FIELDS = ("category", "urgency", "next_action")
START_TIMEOUT_S = 600.0  # loading the base and every version on a busy 2-core machine
REQUEST_TIMEOUT_S = 900.0


@dataclass
class Served:
    """One ticket's answer as the client received it."""

    ticket: TrafficTicket
    request_id: str
    version: str  # x-tunesmith-model-version
    variant: str  # x-tunesmith-variant: champion | canary | ...
    answer: str
    fields: dict[str, str | None]  # parsed from the answer
    confidence: float | None  # the extension's (calibrated) answer confidence
    field_confidence: dict[str, float | None]
    decision: str | None  # auto | sampled | low_confidence | mandatory
    threshold: float | None
    seconds: float

    def right(self, name: str) -> bool:
        return self.fields.get(name) == getattr(self.ticket.truth, name)

    @property
    def score(self) -> float:
        """fields_mean: the share of the three label fields right."""
        return sum(self.right(n) for n in FIELDS) / len(FIELDS)

    @property
    def exact(self) -> bool:
        return all(self.right(n) for n in FIELDS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``tunesmith serve`` for the project, on 127.0.0.1, for the length of a ``with`` block."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loaded: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.load_seconds = 0.0

    def __enter__(self) -> LocalServer:
        import uvicorn

        from tunesmith.serve.auth import ApiKeys
        from tunesmith.serve.launch import build_app

        t0 = time.perf_counter()
        self.loaded = build_app(self.cfg, keys=ApiKeys.disabled())
        config = uvicorn.Config(self.loaded.app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="tunesmith-simulated-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise TunesmithError(f"the simulation's server on {self.url} did not start")
            time.sleep(0.1)
        self.load_seconds = round(time.perf_counter() - t0, 1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=120)
        self.loaded = None

    @property
    def versions(self) -> list[str]:
        return sorted(self.loaded.catalog.versions) if self.loaded is not None else []


def request_body(cfg: Config, ticket: TrafficTicket, max_tokens: int) -> dict[str, Any]:
    """The chat request a helpdesk integration sends: the ticket, greedy, the answer schema as
    ``response_format`` (the grammar the eval decodes with), the ticket id as the routing key."""
    body: dict[str, Any] = {"model": cfg.project, "messages": ticket.messages(), "temperature": 0,
                            "max_tokens": max_tokens, "user": ticket.ticket_id}
    schema = cfg.eval.output.json_schema
    if schema:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "triage", "schema": schema}}
    return body


def _parse(answer: str) -> dict[str, str | None]:
    try:
        data = json.loads(answer)
    except ValueError:
        return {n: None for n in FIELDS}
    if not isinstance(data, dict):
        return {n: None for n in FIELDS}
    return {n: data.get(n) if isinstance(data.get(n), str) else None for n in FIELDS}


def _one(client: Any, url: str, cfg: Config, ticket: TrafficTicket, max_tokens: int) -> Served:
    t0 = time.perf_counter()
    resp = client.post(f"{url}/v1/chat/completions", json=request_body(cfg, ticket, max_tokens))
    if resp.status_code != 200:
        raise TunesmithError(f"the simulated client got HTTP {resp.status_code} for {ticket.ticket_id}: "
                             f"{resp.text[:300]}")
    data = resp.json()
    choice = data["choices"][0]
    answer = choice["message"]["content"] or ""
    ext = choice.get("tunesmith") or {}
    fields = ext.get("fields") or {}
    return Served(ticket=ticket, request_id=data["id"], version=resp.headers.get("x-tunesmith-model-version", ""),
                  variant=resp.headers.get("x-tunesmith-variant", ""), answer=answer, fields=_parse(answer),
                  confidence=ext.get("confidence"),
                  field_confidence={n: (fields.get(n) or {}).get("confidence") for n in FIELDS},
                  decision=ext.get("decision"), threshold=ext.get("threshold"),
                  seconds=time.perf_counter() - t0)


def replay(server: LocalServer, cfg: Config, tickets: list[TrafficTicket], *, concurrency: int = 8,
           max_tokens: int = 32) -> list[Served]:
    """Send every ticket through the server (at most ``concurrency`` in flight); answers in
    ticket order. Raises TunesmithError on any non-200 answer (nothing is silently dropped).

    The calling thread only waits from here on; it gives its OpenMP team up first (the
    monitor's embedder or an eval may have run on it while the server was up): a second team
    beside the engine worker's makes libgomp stop its helpers spinning (generate/openmp.py)."""
    import httpx

    from tunesmith.generate.openmp import release_thread_pool

    release_thread_pool()
    # One client (one connection) per client thread, as separate helpdesk workers would have:
    # 32 threads sharing one pool (20 keep-alive slots) once got a connection closed under a
    # reader ("[Errno 9] Bad file descriptor", 2026-12-05) and the whole run ended.
    local, clients, lock = threading.local(), [], threading.Lock()

    def client() -> Any:
        if not hasattr(local, "client"):
            # trust_env=False: a proxy set in the environment must never see the loopback traffic
            local.client = httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False)
            with lock:
                clients.append(local.client)
        return local.client

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(lambda t: _one(client(), server.url, cfg, t, max_tokens), tickets))
    finally:
        for c in clients:
            c.close()


def wait_for_shadows(cfg: Config, request_ids: list[str], *, timeout: float = 900.0) -> int:
    """Wait until the challenger has answered the shadow copies of ``request_ids`` (they run in
    the background after each response); returns how many were answered before ``timeout``."""
    from tunesmith.serve.requestlog import connect

    db = connect(Workspace(cfg.workspace_dir).db_path)
    deadline = time.monotonic() + timeout
    wanted = set(request_ids)
    try:
        while True:
            rows = db.execute("SELECT shadow_of FROM request_log WHERE variant = 'shadow' AND shadow_of IS NOT NULL"
                              ).fetchall()
            done = len(wanted & {r[0] for r in rows})
            if done >= len(wanted) or time.monotonic() > deadline:
                return done
            time.sleep(1.0)
    finally:
        db.close()


def shadow_answers(cfg: Config, request_ids: list[str]) -> dict[str, str]:
    """The challenger's shadow answer to each of ``request_ids`` (by the copied request's id)."""
    from tunesmith.serve.requestlog import connect

    db = connect(Workspace(cfg.workspace_dir).db_path)
    try:
        rows = db.execute("SELECT shadow_of, answer FROM request_log WHERE variant = 'shadow' AND choice = 0 "
                          "AND status = 200 AND shadow_of IS NOT NULL").fetchall()
    finally:
        db.close()
    wanted = set(request_ids)
    return {r[0]: r[1] or "" for r in rows if r[0] in wanted}


def parse_fields(answer: str) -> dict[str, str | None]:
    return _parse(answer)
