"""Prometheus text exposition (format 0.0.4) for the service's counters and histograms.

Small enough to write here rather than pull in a client library: counters and histograms with
labels, thread-safe (the batcher's worker thread observes batch sizes).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()):
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"metric {self.name}: expected labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()):
        super().__init__(name, help, labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help: str):
        super().__init__(name, help)
        self._value = 0.0

    def add(self, amount: float) -> None:
        with self._lock:
            self._value += amount

    def render(self) -> list[str]:
        return [*self.header(), f"{self.name} {_number(self._value)}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float], labelnames: Sequence[str] = ()):
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        # per label set: counts per bucket (non-cumulative, last = above every bound), sum
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        slot = bisect.bisect_left(self.buckets, value)  # `le` bounds are inclusive
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[slot] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return sum(series[0]) if series else 0

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, (list(c), s[0])) for k, (c, s) in self._series.items())
        for key, (counts, total) in items:
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {running}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {running}")
        return lines


class ServiceMetrics:
    """The service's metrics; `render()` is the body of GET /metrics."""

    def __init__(self) -> None:
        self.requests = Counter(
            "genforge_requests_total",
            "HTTP requests by route, method and status.",
            ("route", "method", "status"),
        )
        self.latency = Histogram(
            "genforge_request_duration_seconds",
            "Time from receiving a request to sending its response.",
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            ("route",),
        )
        self.batch_images = Histogram(
            "genforge_batch_size_images", "Images per model forward pass.", (1, 2, 4, 8, 16, 32, 64, 128, 256)
        )
        self.batch_requests = Histogram(
            "genforge_batch_size_requests", "Requests merged into one forward pass.", (1, 2, 4, 8, 16, 32, 64)
        )
        self.images = Counter("genforge_images_total", "Images generated or restored.", ("task",))
        self.in_progress = Gauge(
            "genforge_requests_in_progress", "HTTP requests being handled (this one included)."
        )
        # label values: the configured clients' names, or "anonymous" without keys
        self.client_requests = Counter(
            "genforge_client_requests_total",
            "Requests to /v1/* let through, by client (API key name).",
            ("client",),
        )
        self.rate_limited = Counter(
            "genforge_rate_limited_total",
            "Requests to /v1/* refused with 429 by the rate limit, by client.",
            ("client",),
        )
        # a modality's own metrics (its routes add them, deploy/routes.py), rendered after these
        self.extra: list[_Metric] = []

    def observe_batch(self, requests: int, images: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_images.observe(images)

    def render(self) -> str:
        lines: list[str] = []
        metrics = (
            self.requests,
            self.in_progress,
            self.latency,
            self.batch_images,
            self.batch_requests,
            self.images,
            self.client_requests,
            self.rate_limited,
        )
        for metric in (*metrics, *self.extra):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
