"""A served tiny project: a random Llama, one LoRA version trained for 3 steps, the app under
uvicorn on 127.0.0.1 (a free port) in a background thread, for the whole session."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

KEY = "test-key-0123456789abcdef"


@contextlib.contextmanager
def running(app, *, lifespan: str = "on", what: str = "the server") -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 (a port the OS picked) in a thread until the block ends."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@dataclass
class Served:
    url: str
    loaded: object  # tunesmith.serve.launch.Loaded
    cfg: object
    version: str  # the trained model version id

    @property
    def engine(self):
        return self.loaded.engine

    @property
    def service(self):
        return self.loaded.app.state.service

    def client(self, key: str | None = KEY):
        import httpx
        from openai import OpenAI

        # trust_env=False: a proxy set in the environment must not see loopback traffic
        return OpenAI(base_url=f"{self.url}/v1", api_key=key or "none", max_retries=0, timeout=60,
                      http_client=httpx.Client(trust_env=False, timeout=60))


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    from train.test_trainer import make_project
    from tunesmith.config import load_config
    from tunesmith.train.recipe import train

    root = tmp_path_factory.mktemp("serve")
    cfg = load_config(make_project(root, "{max_steps: 3, lr: 0.02}"))
    return cfg, train(cfg).model_id


@pytest.fixture(scope="session")
def served(project):
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    cfg, version = project
    loaded = build_app(cfg, keys=ApiKeys([KEY]), default_max_tokens=8)
    with running(loaded.app) as url:
        yield Served(url, loaded, cfg, version)
