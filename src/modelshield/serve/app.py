"""The FastAPI app: the Open Inference Protocol v2 REST subset in front of a :class:`ProtectedModel`.

The app holds no defense logic: it authenticates the client, checks the request, takes one request from the
client's rate bucket, and hands the batch to ``ProtectedModel.answer`` with the client's policy (output mode
and budget). Every state change (rate bucket, query count, defense state) is committed to the store before the
200 is sent. Errors are ``{"error": "..."}`` with a 4xx status: 400 bad request, 401 missing or unknown API key,
403 revoked key or an output the policy does not allow, 404 unknown model or route, 413 body too large, 429
rate limit (with ``Retry-After``) or budget spent.

Example:
    >>> import torch
    >>> from fastapi.testclient import TestClient
    >>> from modelshield.defense import NoDefense, ProtectedModel
    >>> from modelshield.models import build_model
    >>> from modelshield.state import InMemoryStateStore
    >>> store = InMemoryStateStore()
    >>> model = ProtectedModel(build_model("lenet5", in_channels=1, image_size=8, num_classes=10), NoDefense(),
    ...                        store=store, input_shape=(1, 8, 8))
    >>> registry = ClientRegistry(store)
    >>> _, key = registry.add("alice", ClientSpec(output="label"))
    >>> client = TestClient(create_app(model, registry, ServeConfig(model_name="digits")))
    >>> body = {"id": "q1", "inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 128}]}
    >>> r = client.post("/v2/models/digits/infer", json=body, headers={"Authorization": f"Bearer {key}"})
    >>> r.status_code, r.json()["id"], [o["name"] for o in r.json()["outputs"]], model.queries("alice")
    (200, 'q1', ['label'], 2)
    >>> client.post("/v2/models/digits/infer", json=body).json()
    {'error': 'missing API key: send the header Authorization: Bearer <key>'}
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelshield._version import __version__
from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.defense import ProtectedModel
from modelshield.serve.clients import ClientRecord, ClientRegistry
from modelshield.serve.config import ClientSpec, ServeConfig
from modelshield.serve.metrics import ActionRecorder, ServerMetrics
from modelshield.serve.protocol import (
    BadRequest,
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    ModelMetadata,
    ResponseOutput,
    ServerMetadata,
    decode_input,
)

__all__ = ["ApiError", "create_app"]

log = logging.getLogger("modelshield.serve")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in ((400, "bad request"), (401, "missing or unknown API key"), (403, "revoked key or output not allowed"),
                       (404, "unknown model"), (413, "body too large"), (429, "rate limit (Retry-After) or budget spent"))
}


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status`` (and optional headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _TooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class _Guard:
    """Outermost ASGI layer: body size limit (413), request metrics, and a last-resort JSON 500."""

    def __init__(self, app: Any, config: ServeConfig, metrics: ServerMetrics) -> None:
        self.app, self.limit, self.metrics = app, config.max_body_bytes, metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "started": False, "seen": 0}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        async def receive_wrapper() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.limit:
                    raise _TooLarge()
            return message

        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if scope.get("method") == "POST":
            if b"inference-header-content-length" in headers:
                await _error(400, "the binary tensor extension is not supported: send JSON "
                                  "(tritonclient: binary_data=False)")(scope, receive, send_wrapper)
                self.metrics.observe_request("unmatched", 400, time.perf_counter() - start)
                return
            # every POST body of the protocol is JSON, and its clients (tritonclient) send it without a content type
            if headers.get(b"content-type") != b"application/json":
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                         + [(b"content-type", b"application/json")]}
        try:
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                raise _TooLarge()
            await self.app(scope, receive_wrapper, send_wrapper)
        except _TooLarge:
            if not state["started"]:
                await _error(413, f"request body over the {self.limit}-byte limit")(scope, receive, send_wrapper)
        except Exception:  # a bug: never leak details, always answer JSON
            log.exception("unhandled error")
            if not state["started"]:
                await _error(500, "internal server error")(scope, receive, send_wrapper)
        route = scope.get("route")
        self.metrics.observe_request(getattr(route, "path", "unmatched"), int(state["status"]), time.perf_counter() - start)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def create_app(model: ProtectedModel, registry: ClientRegistry, config: ServeConfig | None = None, *,
               metrics: ServerMetrics | None = None) -> FastAPI:
    """Build the app.

    Args:
        model: the protected model (its defense, store and per-client counts).
        registry: the clients (normally on the same store).
        config: names and limits.
        metrics: where to count (default: a fresh registry for this app).

    Returns:
        The FastAPI app, wrapped in the size-limit/metrics layer (``app.state.metrics`` holds the metrics).
    """
    config = config or ServeConfig()
    metrics = metrics or ServerMetrics()
    if model.input_shape is None:
        raise ConfigError("the served ProtectedModel needs input_shape=(C, H, W)")
    input_shape = tuple(model.input_shape)
    k = model.num_classes
    app = FastAPI(title="modelshield", version=__version__, summary="a defended model behind the Open Inference Protocol v2",
                  responses=_ERRORS)
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return _error(400, "malformed JSON body")
        return _error(400, "invalid request: " + "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "not found", 405: "method not allowed", 413: f"request body over the {config.max_body_bytes}-byte limit",
                   400: "malformed request body"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    def check_model(name: str, version: str | None) -> None:
        if name != config.model_name:
            raise ApiError(404, f"unknown model {name!r}; this server serves {config.model_name!r}")
        if version is not None and version != config.model_version:
            raise ApiError(404, f"unknown version {version!r} of model {name!r}; available: {config.model_version!r}")

    def authenticate(request: Request) -> ClientRecord:
        token = _bearer(request)
        if token is None:
            raise ApiError(401, "missing API key: send the header Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
        record = registry.authenticate(token)
        if record is None:
            raise ApiError(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
        if record.revoked:
            raise ApiError(403, "this API key was revoked")
        return record

    @app.get("/v2", response_model=ServerMetadata, tags=["server"])
    def server_metadata() -> ServerMetadata:
        """Server name, version and protocol extensions."""
        return ServerMetadata(name="modelshield", version=__version__, extensions=[])

    @app.get("/v2/health/live", tags=["server"])
    def live() -> dict[str, bool]:
        """Liveness: the process answers."""
        return {"live": True}

    @app.get("/v2/health/ready", tags=["server"])
    def ready() -> dict[str, bool]:
        """Readiness: the model is loaded and the state store answers."""
        registry.store.get("health-check")
        return {"ready": True}

    def metadata(name: str, version: str | None = None) -> ModelMetadata:
        check_model(name, version)
        return ModelMetadata(name=config.model_name, versions=[config.model_version], platform="pytorch",
                             inputs=[MetadataTensor(name="input", datatype="FP32", shape=[-1, *input_shape])],
                             outputs=[MetadataTensor(name="probabilities", datatype="FP32", shape=[-1, k]),
                                      MetadataTensor(name="label", datatype="INT64", shape=[-1])])

    def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        check_model(name, version)
        return {"name": config.model_name, "ready": True}

    def infer(name: str, body: InferenceRequest, request: Request, version: str | None = None) -> InferenceResponse:
        check_model(name, version)
        record = authenticate(request)
        spec: ClientSpec = record.spec
        if len(body.inputs) != 1:
            raise ApiError(400, f"exactly one input tensor is accepted, got {len(body.inputs)}")
        allowed = ["probabilities", "label"] if spec.output == "probabilities" else ["label"]
        wanted = [o.name for o in body.outputs] if body.outputs else allowed
        for out in wanted:
            if out not in ("probabilities", "label"):
                raise ApiError(400, f"unknown output {out!r}; outputs: probabilities (FP32), label (INT64)")
            if out not in allowed:
                raise ApiError(403, f"this client may receive only {', '.join(allowed)}, not {out!r}")
        try:
            x = decode_input(body.inputs[0], input_shape, max_images=config.max_images)  # type: ignore[arg-type]
        except BadRequest as exc:
            raise ApiError(400, str(exc)) from None
        decision = registry.take(record)
        if not decision.allowed:
            metrics.refused("rate")
            wait = min(config.max_retry_after, max(1, math.ceil(decision.retry_after)))
            raise ApiError(429, f"rate limit: {spec.rate:g} requests per second (burst {spec.bucket_size}); retry in {wait} s",
                           {"Retry-After": str(wait)})
        try:
            probs = model.answer(x, record.client_id, spec.policy)
        except BudgetExceeded:
            metrics.refused("budget")
            used = model.queries(record.client_id)
            raise ApiError(429, f"query budget spent: {used} of {spec.budget} images used, this request asked for "
                                f"{x.shape[0]} more") from None
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        recorder = model.defense
        metrics.observe_answers(recorder.take() if isinstance(recorder, ActionRecorder) else {recorder.name: int(x.shape[0])})
        n = int(x.shape[0])
        outputs = []
        for out in wanted:
            if out == "probabilities":
                outputs.append(ResponseOutput(name="probabilities", shape=[n, k], datatype="FP32", data=probs.flatten().tolist()))
            else:
                outputs.append(ResponseOutput(name="label", shape=[n], datatype="INT64", data=probs.argmax(dim=1).tolist()))
        return InferenceResponse(model_name=config.model_name, model_version=config.model_version, id=body.id, outputs=outputs)

    for path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(path, metadata, methods=["GET"], response_model=ModelMetadata, tags=["model"],
                          summary="model metadata")
        app.add_api_route(path + "/ready", model_ready, methods=["GET"], tags=["model"], summary="model readiness")
        app.add_api_route(path + "/infer", infer, methods=["POST"], response_model=InferenceResponse, tags=["model"],
                          summary="inference (Authorization: Bearer <key>)")

    @app.get("/metrics", tags=["server"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return _wrap(app, config, metrics)


def _wrap(app: FastAPI, config: ServeConfig, metrics: ServerMetrics) -> FastAPI:
    app.add_middleware(_Guard, config=config, metrics=metrics)  # type: ignore[arg-type]
    return app
