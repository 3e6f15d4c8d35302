"""Prometheus text exposition (format 0.0.4), written by hand: a few counters, one latency
histogram, and the runners' gauges read when /metrics is scraped."""
from __future__ import annotations

import threading
from typing import Dict, Iterable, Tuple

__all__ = ["Metrics"]

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _labels(d: Iterable[Tuple[str, str]]) -> str:
    parts = []
    for k, v in d:
        v = str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{k}="{v}"')
    return "{" + ",".join(parts) + "}" if parts else ""


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Dict[tuple, int] = {}          # (model, route, status) -> count
        self.prompt_tokens: Dict[str, int] = {}
        self.completion_tokens: Dict[str, int] = {}
        self.latency: Dict[tuple, list] = {}          # (model, route) -> [buckets..., sum, count]
        self.ttft: Dict[str, list] = {}
        self.rejected: Dict[tuple, int] = {}          # (model, reason)

    def request(self, model: str, route: str, status: int) -> None:
        with self._lock:
            k = (model, route, str(status))
            self.requests[k] = self.requests.get(k, 0) + 1

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens[model] = self.prompt_tokens.get(model, 0) + prompt
            self.completion_tokens[model] = self.completion_tokens.get(model, 0) + completion

    def _observe(self, table, key, seconds: float) -> None:
        h = table.get(key)
        if h is None:
            h = table[key] = [0] * len(_BUCKETS) + [0.0, 0]
        for i, b in enumerate(_BUCKETS):
            if seconds <= b:
                h[i] += 1
        h[-2] += seconds
        h[-1] += 1

    def latency_s(self, model: str, route: str, seconds: float) -> None:
        with self._lock:
            self._observe(self.latency, (model, route), seconds)

    def ttft_s(self, model: str, seconds: float) -> None:
        with self._lock:
            self._observe(self.ttft, model, seconds)

    def reject(self, model: str, reason: str) -> None:
        with self._lock:
            k = (model, reason)
            self.rejected[k] = self.rejected.get(k, 0) + 1

    def render(self, runners: Dict[str, object]) -> str:
        out = []

        def family(name, typ, help_):
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {typ}")

        def hist(name, table, keynames):
            for key, h in sorted(table.items()):
                key = key if isinstance(key, tuple) else (key,)
                base = list(zip(keynames, key))
                for i, b in enumerate(_BUCKETS):
                    out.append(f"{name}_bucket{_labels(base + [('le', repr(b))])} {h[i]}")
                out.append(f"{name}_bucket{_labels(base + [('le', '+Inf')])} {h[-1]}")
                out.append(f"{name}_sum{_labels(base)} {h[-2]:.6f}")
                out.append(f"{name}_count{_labels(base)} {h[-1]}")

        with self._lock:
            family("pyllamacy_requests_total", "counter", "HTTP requests by model, route, status.")
            for (m, r, s), v in sorted(self.requests.items()):
                out.append(f"pyllamacy_requests_total"
                           f"{_labels([('model', m), ('route', r), ('status', s)])} {v}")
            family("pyllamacy_rejected_total", "counter", "Requests refused (queue full, ...).")
            for (m, r), v in sorted(self.rejected.items()):
                out.append(f"pyllamacy_rejected_total{_labels([('model', m), ('reason', r)])} {v}")
            family("pyllamacy_prompt_tokens_total", "counter",
                   "Prompt tokens of finished requests.")
            for m, v in sorted(self.prompt_tokens.items()):
                out.append(f"pyllamacy_prompt_tokens_total{_labels([('model', m)])} {v}")
            family("pyllamacy_completion_tokens_total", "counter", "Generated tokens.")
            for m, v in sorted(self.completion_tokens.items()):
                out.append(f"pyllamacy_completion_tokens_total{_labels([('model', m)])} {v}")
            family("pyllamacy_request_duration_seconds", "histogram",
                   "Time from request to last byte, by model and route.")
            hist("pyllamacy_request_duration_seconds", self.latency, ("model", "route"))
            family("pyllamacy_time_to_first_token_seconds", "histogram",
                   "Time from submit to the first generated token.")
            hist("pyllamacy_time_to_first_token_seconds", self.ttft, ("model",))
        stats = {name: r.stats() for name, r in runners.items()}
        for key, typ, help_ in (
                ("slots_total", "gauge", "Slots (sequences decoded together)."),
                ("slots_busy", "gauge", "Slots holding a request."),
                ("queue", "gauge", "Requests waiting for a slot."),
                ("steps", "counter", "Engine steps (llama_decode calls)."),
                ("decoded_tokens", "counter", "Tokens decoded (prompt + generated)."),
                ("reused_tokens", "counter", "Prompt tokens reused from a slot's cache."),
                ("drafted_tokens", "counter", "Speculative draft tokens proposed."),
                ("accepted_tokens", "counter", "Speculative draft tokens confirmed.")):
            name = f"pyllamacy_{key}" + ("_total" if typ == "counter" else "")
            family(name, typ, help_)
            for m, st in sorted(stats.items()):
                out.append(f"{name}{_labels([('model', m)])} {st[key]}")
        return "\n".join(out) + "\n"
