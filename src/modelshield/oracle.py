"""The black-box prediction interface every extraction attack uses.

An :class:`Oracle` answers ``oracle(x) -> (N, K) probabilities``, counts the queries it answered, refuses a
batch that would exceed its budget (:class:`~modelshield.errors.BudgetExceeded`, nothing answered), carries the
client id it asks as, and has an output mode: ``probabilities`` (the defended vectors) or ``label`` (a one-hot
on their top-1 class, for hard-label attackers). :class:`ModelOracle` is the in-process implementation over a
model and a defense; :class:`HttpOracle` asks a live ``modelshield serve`` (or any Open Inference Protocol v2
server) over HTTP, so every extraction attack also runs against the real API.

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> oracle = ModelOracle(model, budget=5, output="label", client_id="mallory")
    >>> oracle(torch.rand(3, 1, 8, 8)).sum(dim=1).tolist(), oracle.queries, oracle.remaining
    ([1.0, 1.0, 1.0], 3, 2)
    >>> oracle(torch.rand(3, 1, 8, 8))
    Traceback (most recent call last):
    ...
    modelshield.errors.BudgetExceeded: query budget exceeded: 3 more queries asked, 2 of 5 left (client 'mallory')
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from modelshield.defense.base import Defense
from modelshield.defense.baselines import NoDefense
from modelshield.defense.protected import ProtectedModel
from modelshield.errors import BudgetExceeded, ConfigError, ModelShieldError
from modelshield.images import as_image_batch

__all__ = ["API_KEY_ENV", "OUTPUT_MODES", "HttpOracle", "ModelOracle", "Oracle", "load_api_key"]

API_KEY_ENV = "MODELSHIELD_API_KEY"

OUTPUT_MODES = ("probabilities", "label")


class Oracle(ABC):
    """A counted, budgeted prediction interface.

    Args:
        num_classes: K.
        client_id: the identity the queries are sent as.
        budget: maximum number of queries answered (None = unlimited).
        output: ``probabilities`` or ``label``.
    """

    def __init__(self, num_classes: int, *, client_id: str = "client-0", budget: int | None = None,
                 output: str = "probabilities") -> None:
        if output not in OUTPUT_MODES:
            raise ConfigError(f"oracle output must be one of {', '.join(OUTPUT_MODES)}, got {output!r}")
        if budget is not None and budget < 0:
            raise ConfigError(f"oracle budget must be >= 0 or None, got {budget}")
        if not client_id:
            raise ConfigError("oracle client_id must be a non-empty string")
        self.num_classes = num_classes
        self.client_id = client_id
        self.budget = budget
        self.output = output
        self._queries = 0
        self._lock = threading.Lock()

    @property
    def queries(self) -> int:
        """Queries answered so far."""
        return self._queries

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget (None when unlimited)."""
        return None if self.budget is None else self.budget - self._queries

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Answer a batch (N, C, H, W) -> (N, K); raises BudgetExceeded (answering nothing) past the budget."""
        n = int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() >= 1 else 0
        with self._lock:
            if self.budget is not None and self._queries + n > self.budget:
                raise BudgetExceeded(f"query budget exceeded: {n} more queries asked, {self.budget - self._queries} of "
                                     f"{self.budget} left (client {self.client_id!r})")
            self._queries += n
        try:
            probs = self._answer(x)
        except BaseException:
            with self._lock:
                self._queries -= n
            raise
        if self.output == "label":
            return torch.zeros_like(probs).scatter_(1, probs.argmax(dim=1, keepdim=True), 1.0)
        return probs

    @abstractmethod
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        """The defended probabilities for a batch."""


class ModelOracle(Oracle):
    """An in-process oracle over a model and a defense (default: undefended).

    Args:
        model: the protected classifier.
        defense: how answers are produced (see :mod:`modelshield.defense`).
        client_id, budget, output: see :class:`Oracle`.
        batch_size: queries are answered in consecutive chunks of this size, in order, as an API would.
        input_shape: (C, H, W) accepted (default: not checked).
    """

    def __init__(self, model: nn.Module, defense: Defense | None = None, *, client_id: str = "client-0",
                 budget: int | None = None, output: str = "probabilities", batch_size: int = 256,
                 input_shape: tuple[int, int, int] | None = None) -> None:
        self.protected = ProtectedModel(model, defense or NoDefense(), input_shape=input_shape, max_batch=batch_size)
        super().__init__(self.protected.num_classes, client_id=client_id, budget=budget, output=output)

    @property
    def defense(self) -> Defense:
        """The defense answering."""
        return self.protected.defense

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        return self.protected.answer(x, self.client_id)


def load_api_key(key_file: str | os.PathLike[str] | None = None, env: str = API_KEY_ENV) -> str:
    """A server API key from a file (first line) or, without one, the environment variable ``env``.

    Raises:
        ConfigError: no file given and ``env`` not set, or the file does not exist or is empty.
    """
    if key_file is not None:
        try:
            text = open(key_file, encoding="utf-8").read().strip()  # noqa: SIM115
        except FileNotFoundError:
            raise ConfigError(f"API key file {key_file} does not exist (`modelshield clients add NAME --key-out FILE` writes one)") from None
        if not text:
            raise ConfigError(f"API key file {key_file} is empty")
        return text.splitlines()[0].strip()
    value = os.environ.get(env, "").strip()
    if not value:
        raise ConfigError(f"no API key: pass a key file or set the environment variable {env}")
    return value


class HttpOracle(Oracle):
    """The oracle over a live prediction API speaking the Open Inference Protocol v2 (``modelshield serve``).

    The server applies the client's policy: a ``probabilities`` client gets the defended vectors, a
    ``label`` client gets INT64 labels, returned here as one-hot rows. Budgets are the server's too: a
    budget refusal raises :class:`~modelshield.errors.BudgetExceeded`; a rate refusal waits ``Retry-After``
    seconds and retries (at most ``max_waits`` times per request).

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8000``.
        model_name: the model's name on the server.
        api_key: the client's API key (read it with :func:`load_api_key`; never put it on a command line).
        client_id: label of this oracle in results (the server knows the client by its key).
        batch_size: most images per request (the server's limit is 256 by default).
        timeout: seconds per request.
        max_waits: rate-limit waits per request before giving up.
        output: ``label`` turns probability answers into one-hot rows here too (a hard-label attacker).
        transport: an ``httpx`` transport (tests).

    Raises:
        ConfigError: the server refuses the key, or does not serve ``model_name``.
    """

    def __init__(self, url: str, model_name: str, *, api_key: str, client_id: str = "http", batch_size: int = 64,
                 timeout: float = 30.0, max_waits: int = 10, output: str = "probabilities", transport: Any = None) -> None:
        import httpx

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not api_key:
            raise ConfigError("HttpOracle needs an API key")
        self.url, self.model_name, self.batch_size, self.max_waits = url.rstrip("/"), model_name, batch_size, max_waits
        self._httpx = httpx
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"})
        meta = self._request("GET", f"/v2/models/{model_name}")
        try:
            outputs = {o["name"]: o for o in meta["outputs"]}
            num_classes = int(outputs["probabilities"]["shape"][-1])
            self.input_shape = tuple(int(s) for s in meta["inputs"][0]["shape"][1:])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ConfigError(f"{self.url}: model {model_name!r} metadata has no probabilities output of shape [-1, K]") from None
        super().__init__(num_classes, client_id=client_id, output=output)

    def __repr__(self) -> str:
        return f"HttpOracle({self.url!r}, {self.model_name!r}, client_id={self.client_id!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        for _ in range(self.max_waits + 1):
            try:
                response = self._http.request(method, path, json=body)
            except self._httpx.HTTPError as exc:
                raise ModelShieldError(f"{self.url}{path}: {type(exc).__name__}: {exc}") from None
            try:
                doc = response.json()
            except ValueError:
                doc = {"error": response.text[:200]}
            message = doc.get("error", "") if isinstance(doc, dict) else ""
            if response.status_code == 200:
                return doc
            if response.status_code == 429 and "retry-after" in response.headers:
                time.sleep(min(60.0, float(response.headers["retry-after"])))
                continue
            if response.status_code == 429:
                raise BudgetExceeded(f"{self.url}: {message or 'query budget spent'}")
            if response.status_code in (401, 403, 404):
                raise ConfigError(f"{self.url}{path}: HTTP {response.status_code}: {message}")
            raise ModelShieldError(f"{self.url}{path}: HTTP {response.status_code}: {message}")
        raise ModelShieldError(f"{self.url}: still rate-limited after {self.max_waits} waits")

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        x = as_image_batch(x, what="queries", shape=self.input_shape)  # type: ignore[arg-type]
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size]
            body = {"inputs": [{"name": "input", "shape": list(chunk.shape), "datatype": "FP32",
                                "data": chunk.flatten().tolist()}]}
            doc = self._request("POST", f"/v2/models/{self.model_name}/infer", body)
            outputs = {o["name"]: o for o in doc.get("outputs", [])}
            n = chunk.shape[0]
            if "probabilities" in outputs:
                out.append(torch.tensor(outputs["probabilities"]["data"], dtype=torch.float32).view(n, self.num_classes))
            elif "label" in outputs:
                labels = torch.tensor(outputs["label"]["data"], dtype=torch.int64).view(n, 1)
                out.append(torch.zeros(n, self.num_classes).scatter_(1, labels, 1.0))
            else:
                raise ModelShieldError(f"{self.url}: the answer holds neither probabilities nor label")
        return torch.cat(out) if out else torch.empty(0, self.num_classes)
