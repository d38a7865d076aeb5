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
import threading
from typing import Any

import torch
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from modelshield.defense.base import Defense
from modelshield.defense.policy import ClientPolicy

__all__ = ["ActionRecorder", "ServerMetrics"]

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


class ActionRecorder(Defense):
    """A defense, unchanged, that also notes how many answers each of its actions produced (for the metrics).

    QUEEN reports which answers it reversed (:meth:`~modelshield.defense.QueenDefense.answer_with_decisions`);
    every other defense's answers count under its own name. The note is per thread: ``ProtectedModel.answer``
    calls the defense once per batch in the calling thread, and :meth:`take` reads and clears it there.

    Example:
        >>> import torch
        >>> from modelshield.defense import NoDefense
        >>> rec = ActionRecorder(NoDefense())
        >>> _ = rec.answer(torch.zeros(3, 1, 2, 2), torch.zeros(3, 2), torch.zeros(3, 4), "alice")
        >>> rec.take(), rec.take()
        ({'none': 3}, {})
    """

    def __init__(self, inner: Defense) -> None:
        self.inner = inner
        self.name = inner.name
        self._local = threading.local()

    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        decide = getattr(self.inner, "answer_with_decisions", None)
        if decide is None:
            out = self.inner.answer(x, logits, features, client_id, policy)
            actions = {self.inner.name: int(x.shape[0])}
        else:
            out, reversed_rows = decide(x, logits, features, client_id, policy)
            n_rev = int(reversed_rows.sum())
            actions = {"reversed": n_rev, "perturbed": int(x.shape[0]) - n_rev}
        self._local.actions = actions
        return out

    def take(self) -> dict[str, int]:
        """The actions of this thread's last answered batch (then forgotten)."""
        actions = getattr(self._local, "actions", None) or {}
        self._local.actions = None
        return actions

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def reset(self, client_id: str | None = None) -> None:
        self.inner.reset(client_id)
