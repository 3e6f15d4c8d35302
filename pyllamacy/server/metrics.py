"""/metrics through prometheus_client: one registry per server (app), the request counters and
latency histograms recorded by the routes, and the runners' engine figures read when /metrics
is scraped.

Two families of names:
- ``pyllamacy_*``, labelled by model (and route / status): requests, rejections, tokens,
  request duration and time to first token, slots, queue, engine steps, decoded / reused /
  drafted / accepted tokens.
- ``llamacpp:*``: the names llama-server uses, where pyllamacy measures the same thing, so
  that dashboards made for llama-server work (labelled by model as well).
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# runner.stats() key -> (pyllamacy name, kind, help, llama-server name or None)
_ENGINE_SERIES = (
    ("slots_total", "pyllamacy_slots_total", "gauge",
     "Slots (sequences decoded together).", None),
    ("slots_busy", "pyllamacy_slots_busy", "gauge", "Slots holding a request.",
     "llamacpp:requests_processing"),
    ("queue", "pyllamacy_queue", "gauge", "Requests waiting for a slot.",
     "llamacpp:requests_deferred"),
    ("steps", "pyllamacy_steps", "counter", "Engine steps (llama_decode calls).",
     "llamacpp:n_decode"),
    ("decoded_tokens", "pyllamacy_decoded_tokens", "counter",
     "Tokens decoded (prompt + generated).", None),
    ("reused_tokens", "pyllamacy_reused_tokens", "counter",
     "Prompt tokens reused from a slot's cache.", "llamacpp:prompt_tokens_cached"),
    ("drafted_tokens", "pyllamacy_drafted_tokens", "counter",
     "Speculative draft tokens proposed.", "llamacpp:spec_decode_num_draft_tokens"),
    ("accepted_tokens", "pyllamacy_accepted_tokens", "counter",
     "Speculative draft tokens confirmed.", "llamacpp:spec_decode_num_accepted_tokens"),
)


class _EngineCollector:
    """Reads each runner's stats() at scrape time (the runners change as models load)."""

    def __init__(self, runners: Callable[[], Mapping[str, object]]):
        self._runners = runners

    def describe(self):
        return []      # no fixed series: the registry must not call collect() at register

    def collect(self):
        stats = {name: r.stats() for name, r in sorted(self._runners().items())}
        for key, name, kind, help_, llama_name in _ENGINE_SERIES:
            for metric_name in (name, llama_name):
                if metric_name is None:
                    continue
                fam = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                    metric_name, help_, labels=["model"])
                for model, st in stats.items():
                    fam.add_metric([model], st[key])
                yield fam


class Metrics:
    """The counters and histograms of one server; render() is the /metrics body."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._requests = Counter("pyllamacy_requests", "HTTP requests by model, route, status.",
                                 ["model", "route", "status"], registry=r)
        self._rejected = Counter("pyllamacy_rejected", "Requests refused (queue full, ...).",
                                 ["model", "reason"], registry=r)
        self._prompt = Counter("pyllamacy_prompt_tokens", "Prompt tokens of finished requests.",
                               ["model"], registry=r)
        self._completion = Counter("pyllamacy_completion_tokens", "Generated tokens.",
                                   ["model"], registry=r)
        # llama-server's names for the same two counts
        self._prompt_l = Counter("llamacpp:prompt_tokens",
                                 "Number of prompt tokens processed (finished requests).",
                                 ["model"], registry=r)
        self._predicted_l = Counter("llamacpp:tokens_predicted",
                                    "Number of generation tokens processed.", ["model"],
                                    registry=r)
        self._latency = Histogram("pyllamacy_request_duration_seconds",
                                  "Time from request to last byte, by model and route.",
                                  ["model", "route"], buckets=_BUCKETS, registry=r)
        self._ttft = Histogram("pyllamacy_time_to_first_token_seconds",
                               "Time from submit to the first generated token.", ["model"],
                               buckets=_BUCKETS, registry=r)
        self._runners: Mapping[str, object] = {}
        self._lock = threading.Lock()
        r.register(_EngineCollector(lambda: self._runners))

    def request(self, model: str, route: str, status: int) -> None:
        self._requests.labels(model, route, str(status)).inc()

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        self._prompt.labels(model).inc(prompt)
        self._completion.labels(model).inc(completion)
        self._prompt_l.labels(model).inc(prompt)
        self._predicted_l.labels(model).inc(completion)

    def latency_s(self, model: str, route: str, seconds: float) -> None:
        self._latency.labels(model, route).observe(seconds)

    def ttft_s(self, model: str, seconds: float) -> None:
        self._ttft.labels(model).observe(seconds)

    def reject(self, model: str, reason: str) -> None:
        self._rejected.labels(model, reason).inc()

    def render(self, runners: Dict[str, object]) -> str:
        """The Prometheus text exposition of everything, with `runners`' current figures."""
        with self._lock:        # one scrape at a time reads the runners it was given
            self._runners = runners
            try:
                return generate_latest(self.registry).decode("utf-8")
            finally:
                self._runners = {}
