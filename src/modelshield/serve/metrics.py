"""Prometheus metrics of one server (``GET /metrics``). No client id is ever a label value.

* ``modelshield_requests_total{route, status}``: requests by route template and HTTP status.
* ``modelshield_request_seconds{route}``: latency histogram.
* ``modelshield_answers_total{action}``: answered images by defense action (QUEEN: ``reversed`` /
  ``perturbed``; other defenses: the defense's name).
* ``modelshield_refusals_total{reason}``: refused requests, ``budget`` or ``rate``.
* ``modelshield_images_total``: images answered.

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` (``modelshield serve --workers N`` does) and
every worker's ``/metrics`` reports the sum over all of them.

Example:
    >>> m = ServerMetrics()
    >>> m.observe_request("/v2/health/live", 200, 0.001)
    >>> b"modelshield_requests_total" in m.render()[0]
    True
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["ServerMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    """The metric families of one app, in their own registry (several apps in one process do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("modelshield_requests", "HTTP requests by route template and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("modelshield_request_seconds", "request latency in seconds", ["route"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.answers = Counter("modelshield_answers", "answered images by defense action", ["action"], registry=self.registry)
        self.refusals = Counter("modelshield_refusals", "refused requests by reason (budget, rate)", ["reason"],
                                registry=self.registry)
        self.images = Counter("modelshield_images", "images answered", registry=self.registry)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_answers(self, actions: dict[str, int]) -> None:
        """Count answered images by action."""
        total = 0
        for action, count in actions.items():
            if count:
                self.answers.labels(action).inc(count)
                total += count
        self.images.inc(total)

    def refused(self, reason: str) -> None:
        """Count a budget or rate refusal."""
        self.refusals.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (summed over workers in multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
