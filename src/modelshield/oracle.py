"""Black-box transports: the prediction interface every extraction attack talks to.

An :class:`Oracle` answers ``oracle(x) -> (N, K)`` (probability vectors, or one-hot rows where the server only
gives labels), counts the queries answered to it and carries the client id it asks as. It is a transport and
nothing more: output mode and query budget are the server's per-client policy
(:class:`~modelshield.defense.ProtectedModel` with a :class:`~modelshield.defense.ClientPolicy`), so the same
attack code runs against an in-process model and against the HTTP server, and meets the same rules.

* :class:`ModelOracle`: in process, over an ``nn.Module`` (the undefended softmax) or anything that answers
  like a server (:class:`Answerer`, e.g. a ``ProtectedModel``).
* :class:`CallableOracle`: any function ``x -> probabilities`` (or one-hot labels).
* :class:`HttpOracle` (with the ``serve`` extra): a live ``modelshield serve`` (or any Open Inference Protocol v2
  server) over HTTP.

Queries may be torch tensors or numpy arrays, float in [0, 1] or uint8 in [0, 255]
(:func:`~modelshield.images.as_image_batch`). A call larger than the oracle's ``batch_size`` is sent as several
requests in order; if one of them is refused (e.g. :class:`~modelshield.errors.BudgetExceeded`), the earlier
ones were answered and counted by the server and by the oracle, and the error propagates.

Example:
    >>> import numpy as np, torch
    >>> from modelshield.models import build_model
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> oracle = ModelOracle(model, client_id="mallory")
    >>> oracle(np.zeros((3, 1, 8, 8), dtype=np.uint8)).shape, oracle.queries, oracle.num_classes
    (torch.Size([3, 10]), 3, 10)
    >>> top1 = CallableOracle(lambda x: torch.eye(2)[(x.mean(dim=(1, 2, 3)) > 0.5).long()], num_classes=2)
    >>> top1(torch.tensor([0.2, 0.9]).view(2, 1, 1, 1).expand(2, 1, 4, 4)).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from modelshield.errors import BudgetExceeded, ConfigError, ModelShieldError
from modelshield.images import as_image_batch

__all__ = ["API_KEY_ENV", "Answerer", "CallableOracle", "HttpOracle", "ModelOracle", "Oracle", "load_api_key"]

API_KEY_ENV = "MODELSHIELD_API_KEY"


@runtime_checkable
class Answerer(Protocol):
    """Anything that answers query batches as a server does (``ProtectedModel`` is one)."""

    @property
    def num_classes(self) -> int:
        """K."""
        ...

    def answer(self, x: torch.Tensor, client_id: str, policy: Any = None) -> torch.Tensor:
        """The (N, K) answers for a batch from ``client_id`` under ``policy`` (the server's default when None)."""
        ...


class Oracle(ABC):
    """A counted prediction transport (subclasses implement :meth:`_answer`, one request).

    Args:
        num_classes: K.
        client_id: the identity the queries are sent as.
        batch_size: most queries per request (a larger call is split in order); None sends each call whole.

    Raises:
        ConfigError: a bad setting.
    """

    def __init__(self, num_classes: int, *, client_id: str = "client-0", batch_size: int | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"oracle num_classes must be an integer >= 1, got {num_classes!r}")
        if not isinstance(client_id, str) or not client_id:
            raise ConfigError(f"oracle client_id must be a non-empty string, got {client_id!r}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"oracle batch_size must be >= 1 or None, got {batch_size}")
        self.num_classes = num_classes
        self.client_id = client_id
        self.batch_size = batch_size
        self._queries = 0
        self._lock = threading.Lock()

    @property
    def queries(self) -> int:
        """Queries answered to this oracle so far."""
        return self._queries

    def __call__(self, x: Any) -> torch.Tensor:
        """Answer a batch (N, C, H, W) -> (N, K), in order.

        Raises:
            ConfigError: the queries are not an image batch, or the transport answered with the wrong shape.
            BudgetExceeded: the server refused a request (see the module docstring for split calls).
        """
        x = as_image_batch(x, what="queries")
        n = int(x.shape[0])
        step = self.batch_size or max(n, 1)
        out = []
        for start in range(0, n, step):
            chunk = x[start : start + step]
            answers = self._checked(self._answer(chunk), len(chunk))
            with self._lock:
                self._queries += len(chunk)
            out.append(answers)
        return torch.cat(out) if out else torch.empty(0, self.num_classes)

    def _checked(self, answers: Any, n: int) -> torch.Tensor:
        if isinstance(answers, np.ndarray):
            answers = torch.from_numpy(answers)
        if not isinstance(answers, torch.Tensor):
            raise ConfigError(f"oracle answers must be a tensor of shape ({n}, {self.num_classes}), got {type(answers).__name__}")
        if tuple(answers.shape) != (n, self.num_classes):
            raise ConfigError(f"oracle answers must have shape ({n}, {self.num_classes}), got {tuple(answers.shape)}")
        return answers.float()

    @abstractmethod
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        """One request: the answers (n, K) for a validated float32 batch."""


class ModelOracle(Oracle):
    """An in-process oracle.

    Args:
        target: an ``nn.Module`` (put in eval mode and answered with its plain softmax, no policy: put it behind
            a ``ProtectedModel`` for a defense, an output mode or a budget), or an :class:`Answerer` such as
            ``ProtectedModel``.
        client_id: the identity the queries are sent as.
        policy: the client's policy passed to the answerer (e.g. ``ClientPolicy(output="label", budget=5000)``);
            None: the answerer's default.
        batch_size: queries per request, in order, as an API client would send them.

    Raises:
        ConfigError: a target of another kind, a policy for a bare model, a model without a final
            ``nn.Linear`` or ``num_classes`` attribute, or a bad setting.
    """

    def __init__(self, target: nn.Module | Answerer, *, client_id: str = "client-0", policy: Any = None,
                 batch_size: int = 256) -> None:
        if isinstance(target, Answerer):
            num_classes = int(target.num_classes)
        elif isinstance(target, nn.Module):
            if policy is not None:
                raise ConfigError("a policy needs a server that enforces it: pass ProtectedModel(model, defense) "
                                  "as the target instead of the bare model")
            num_classes = _module_classes(target)
            target.eval()
        else:
            raise ConfigError(f"ModelOracle target must be an nn.Module or have answer(x, client_id, policy) and "
                              f"num_classes (e.g. ProtectedModel), got {type(target).__name__}")
        super().__init__(num_classes, client_id=client_id, batch_size=batch_size)
        self.target = target
        self.policy = policy

    @torch.no_grad()
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.target, Answerer):
            return self.target.answer(x, self.client_id, self.policy)
        return torch.softmax(self.target(x), dim=1)


class CallableOracle(Oracle):
    """An oracle over any function ``fn(x) -> (N, K)`` probabilities (or one-hot labels): a remote API
    wrapper, a model in another framework, a recorded answer table.

    Args:
        fn: called with a float32 (N, C, H, W) tensor in [0, 1]; returns a tensor or numpy array (N, K).
        num_classes: K.
        client_id: the identity reported by :attr:`client_id` (``fn`` decides what it does with it).
    """

    def __init__(self, fn: Callable[[torch.Tensor], Any], num_classes: int, *, client_id: str = "client-0") -> None:
        if not callable(fn):
            raise ConfigError(f"CallableOracle needs a function x -> answers, got {type(fn).__name__}")
        super().__init__(num_classes, client_id=client_id)
        self.fn = fn

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)  # type: ignore[no-any-return]


def _module_classes(model: nn.Module) -> int:
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and declared >= 1:
        return declared
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"cannot tell how many classes {type(model).__name__} answers (no num_classes attribute, no "
                          "nn.Linear layer): use CallableOracle(fn, num_classes)")
    return int(linears[-1].out_features)


def load_api_key(key_file: str | os.PathLike[str] | None = None, env: str = API_KEY_ENV) -> str:
    """A server API key from a file (its first line) or, without one, the environment variable ``env``.

    Raises:
        ConfigError: no file given and ``env`` not set, or the file does not exist or is empty.
    """
    if key_file is not None:
        try:
            with open(key_file, encoding="utf-8") as handle:
                text = handle.read().strip()
        except FileNotFoundError:
            raise ConfigError(f"API key file {key_file} does not exist (`modelshield clients add NAME --key-out FILE` "
                              "writes one)") from None
        if not text:
            raise ConfigError(f"API key file {key_file} is empty")
        return text.splitlines()[0].strip()
    value = os.environ.get(env, "").strip()
    if not value:
        raise ConfigError(f"no API key: pass a key file or set the environment variable {env}")
    return value


class HttpOracle(Oracle):
    """The oracle over a live prediction API speaking the Open Inference Protocol v2 (``modelshield serve``).

    A transport like the others: the server applies the client's policy. A ``probabilities`` client gets the
    defended vectors; a ``label`` client gets INT64 labels, returned here as one-hot rows. A budget refusal
    raises :class:`~modelshield.errors.BudgetExceeded`; a rate refusal waits ``Retry-After`` seconds and
    retries (at most ``max_waits`` times per request). ``httpx`` is imported here (the ``serve`` extra).

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8000``.
        model_name: the model's name on the server.
        api_key: the client's API key (read it with :func:`load_api_key`; never put it on a command line).
        client_id: label of this oracle in results (the server knows the client by its key).
        batch_size: most images per request (the server's limit is 256 by default).
        timeout: seconds per request.
        max_waits: rate-limit waits per request before giving up.
        transport: an ``httpx`` transport (tests).

    Raises:
        ConfigError: the server refuses the key, or does not serve ``model_name``.
    """

    def __init__(self, url: str, model_name: str, *, api_key: str, client_id: str = "http", batch_size: int = 64,
                 timeout: float = 30.0, max_waits: int = 10, transport: Any = None) -> None:
        import httpx

        if not api_key:
            raise ConfigError("HttpOracle needs an API key")
        self.url, self.model_name, self.max_waits = url.rstrip("/"), model_name, max_waits
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
        super().__init__(num_classes, client_id=client_id, batch_size=batch_size)

    def __repr__(self) -> str:  # never shows the key
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
            if response.status_code == 200 and isinstance(doc, dict):
                return doc
            if response.status_code == 429 and "retry-after" in response.headers:
                time.sleep(min(60.0, float(response.headers["retry-after"])))
                continue
            if response.status_code == 429:
                raise BudgetExceeded(f"{self.url}: {message or 'query budget spent'}")
            if response.status_code in (400, 401, 403, 404):
                raise ConfigError(f"{self.url}{path}: HTTP {response.status_code}: {message}")
            raise ModelShieldError(f"{self.url}{path}: HTTP {response.status_code}: {message}")
        raise ModelShieldError(f"{self.url}: still rate-limited after {self.max_waits} waits")

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(f"queries must have shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}
        doc = self._request("POST", f"/v2/models/{self.model_name}/infer", body)
        outputs = {o.get("name"): o for o in doc.get("outputs", []) if isinstance(o, dict)}
        n = int(x.shape[0])
        if "probabilities" in outputs:
            return torch.tensor(outputs["probabilities"]["data"], dtype=torch.float32).view(n, self.num_classes)
        if "label" in outputs:
            labels = torch.tensor(outputs["label"]["data"], dtype=torch.int64).view(n, 1)
            return torch.zeros(n, self.num_classes).scatter_(1, labels, 1.0)
        raise ModelShieldError(f"{self.url}: the answer holds neither probabilities nor label")
