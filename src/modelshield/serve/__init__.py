"""Serving: a defended model behind the Open Inference Protocol v2 REST API (FastAPI + uvicorn).

The app (:func:`create_app`) has no defense logic: every answer goes through ``ProtectedModel.answer`` with the
client's policy. Clients (:class:`ClientRegistry`: hashed 256-bit API keys, output mode, budget, rate limit),
query counts and defense state share one state store: SQLite by default, Redis for replicas
(:class:`~modelshield.state_redis.RedisStateStore`). Metrics: :class:`ServerMetrics`. Guide: ``docs/serving.md``.

Needs the ``serve`` extra (``pip install 'modelshield[serve]'``).
"""

from modelshield.serve.app import ApiError, create_app
from modelshield.serve.clients import ClientRecord, ClientRegistry, RateDecision
from modelshield.serve.config import ClientSpec, ServeConfig
from modelshield.serve.metrics import ServerMetrics
from modelshield.serve.server import ServeOptions, build_app, load_served_model, open_state_store, run_server

__all__ = [
    "ApiError",
    "ClientRecord",
    "ClientRegistry",
    "ClientSpec",
    "RateDecision",
    "ServeConfig",
    "ServeOptions",
    "ServerMetrics",
    "build_app",
    "create_app",
    "load_served_model",
    "open_state_store",
    "run_server",
]
