"""``GET /metrics``: the server's Prometheus metrics, from the real ``prometheus_client``.

Every request the request log records is also counted here (the same two call sites in the
service), so the two never disagree about what happened:

- ``tunesmith_requests_total{endpoint, model, version, variant, status}``: finished requests.
  ``model`` is the name the client sent once it resolved (unknown names count as ``""``: a
  scanner sending random names must not grow the label set without bound).
- ``tunesmith_time_to_first_token_seconds`` and ``tunesmith_request_latency_seconds``
  (histograms, by ``endpoint, model, version, variant``): arrival to the first generated
  token, and arrival to the last byte of the answer. Answers from the response cache count in
  the latency (they are what the client saw) but have no first token.
- ``tunesmith_prompt_tokens_total`` / ``tunesmith_completion_tokens_total`` (counters, same labels).
- ``tunesmith_requests_running`` / ``tunesmith_requests_waiting`` (gauges, read at scrape time).
- ``tunesmith_response_cache_hits_total`` / ``..._misses_total`` / ``tunesmith_response_cache_entries``.

Each server has its own :class:`~prometheus_client.CollectorRegistry` (not the process-global
one): two apps in one process (the tests, a benchmark) keep separate counts.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# seconds: from a cached answer (sub-millisecond) to a long answer on a CPU (a minute)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
LABELS = ("endpoint", "model", "version", "variant")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """The metrics of one server.

    Args:
        waiting: requests queued for the engine now (read at each scrape).
        running: requests in the engine (or at the vLLM child) now.
        cache_entries: answers the response cache holds now.
    """

    def __init__(self, *, waiting: Callable[[], float], running: Callable[[], float],
                 cache_entries: Callable[[], float] = lambda: 0):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tunesmith_requests", "Finished requests, by HTTP status.", (*LABELS, "status"),
                                registry=r)
        self.latency = Histogram("tunesmith_request_latency_seconds", "Arrival to the last byte of the answer.",
                                 LABELS, buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("tunesmith_time_to_first_token_seconds", "Arrival to the first generated token.",
                              LABELS, buckets=TTFT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("tunesmith_prompt_tokens", "Prompt tokens of answered requests (as rendered).",
                                     LABELS, registry=r)
        self.completion_tokens = Counter("tunesmith_completion_tokens", "Generated tokens of answered requests.",
                                         LABELS, registry=r)
        Gauge("tunesmith_requests_running", "Requests being generated now.", registry=r).set_function(running)
        Gauge("tunesmith_requests_waiting", "Requests queued for the engine now.", registry=r).set_function(waiting)
        self.cache_hits = Counter("tunesmith_response_cache_hits", "Requests answered from the response cache.",
                                  registry=r)
        self.cache_misses = Counter("tunesmith_response_cache_misses",
                                    "Cacheable (greedy) requests the response cache did not hold.", registry=r)
        Gauge("tunesmith_response_cache_entries", "Answers the response cache holds.",
              registry=r).set_function(cache_entries)

    def observe(self, *, endpoint: str, model: str | None, version: str | None, variant: str | None, status: int,
                latency_s: float | None = None, ttft_s: float | None = None, prompt_tokens: int = 0,
                completion_tokens: int = 0) -> None:
        """Count one finished request (``model``/``version``/``variant`` None: it did not resolve)."""
        labels = (endpoint, model or "", version or "", variant or "")
        self.requests.labels(*labels, str(status)).inc()
        if status != 200:
            return
        if latency_s is not None:
            self.latency.labels(*labels).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(*labels).observe(ttft_s)
        if prompt_tokens:
            self.prompt_tokens.labels(*labels).inc(prompt_tokens)
        if completion_tokens:
            self.completion_tokens.labels(*labels).inc(completion_tokens)

    def cache_lookup(self, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
