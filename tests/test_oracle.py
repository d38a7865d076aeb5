"""Oracles are transports: counting, client id, request splitting, numpy/uint8 queries, answer checks, no policy."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import modelshield.oracle
from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.models import build_model
from modelshield.oracle import Answerer, CallableOracle, ModelOracle


class Server:
    """An Answerer that records its requests and refuses past a budget of rows."""

    num_classes = 3

    def __init__(self, budget: int = 10**9) -> None:
        self.requests: list[tuple[int, str, object]] = []
        self.budget = budget

    def answer(self, x: torch.Tensor, client_id: str, policy: object = None) -> torch.Tensor:
        if sum(n for n, _, _ in self.requests) + len(x) > self.budget:
            raise BudgetExceeded("refused")
        self.requests.append((len(x), client_id, policy))
        return torch.full((len(x), 3), 1 / 3)


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lenet5", in_channels=1, image_size=8, num_classes=10).eval()


def test_model_oracle_is_the_plain_softmax_and_counts(model: torch.nn.Module) -> None:
    oracle = ModelOracle(model, client_id="eve")
    x = torch.rand(7, 1, 8, 8)
    assert torch.allclose(oracle(x), torch.softmax(model(x), 1), atol=1e-6)
    oracle(x[:2])
    assert (oracle.queries, oracle.client_id, oracle.num_classes) == (9, "eve", 10)
    assert oracle(torch.rand(0, 1, 8, 8)).shape == (0, 10) and oracle.queries == 9


def test_numpy_and_uint8_queries(model: torch.nn.Module) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 1, 8, 8), dtype=np.uint8)
    as_float = torch.from_numpy(pixels).float() / 255
    oracle = ModelOracle(model)
    expected = oracle(as_float)
    assert torch.allclose(oracle(pixels), expected, atol=1e-6)  # uint8 numpy: divided by 255, not read as 0-255
    assert torch.allclose(oracle(torch.from_numpy(pixels)), expected, atol=1e-6)
    assert torch.allclose(oracle(as_float.numpy().astype(np.float64)), expected, atol=1e-6)
    assert oracle.queries == 20
    with pytest.raises(ConfigError, match=r"queries must be a 4-D \(N, C, H, W\) batch, got shape \(8, 8\)"):
        oracle(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(ConfigError, match="NaN"):
        oracle(torch.full((2, 1, 8, 8), float("nan")))
    assert oracle.queries == 20


def test_answerer_gets_client_policy_and_requests_in_order() -> None:
    server = Server()
    assert isinstance(server, Answerer)
    policy = object()
    oracle = ModelOracle(server, client_id="c1", policy=policy, batch_size=5)
    out = oracle(torch.rand(23, 1, 4, 4))
    assert out.shape == (23, 3) and oracle.queries == 23
    assert server.requests == [(5, "c1", policy)] * 4 + [(3, "c1", policy)]


def test_a_refused_request_propagates_after_the_earlier_ones_were_counted() -> None:
    server = Server(budget=12)
    oracle = ModelOracle(server, batch_size=5)
    with pytest.raises(BudgetExceeded):
        oracle(torch.rand(15, 1, 4, 4))
    assert oracle.queries == 10 == sum(n for n, _, _ in server.requests)  # the server answered two requests


def test_callable_oracle() -> None:
    calls = []

    def fn(x: torch.Tensor) -> np.ndarray:
        calls.append(x.dtype)
        return np.eye(4, dtype=np.float64)[(x.mean(dim=(1, 2, 3)) * 3.999).long().numpy()]

    oracle = CallableOracle(fn, num_classes=4, client_id="api")
    x = torch.tensor([0.0, 0.3, 0.6, 0.99]).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    out = oracle(x)
    assert out.dtype == torch.float32 and out.argmax(1).tolist() == [0, 1, 2, 3] and calls == [torch.float32]
    assert (oracle.queries, oracle.client_id) == (4, "api")
    assert oracle(np.full((2, 1, 2, 2), 255, dtype=np.uint8)).argmax(1).tolist() == [3, 3]  # fn saw 1.0, not 255


@pytest.mark.parametrize("answers, message", [
    (torch.zeros(3, 5), r"answers must have shape \(3, 4\), got \(3, 5\)"),
    (torch.zeros(2, 4), r"answers must have shape \(3, 4\), got \(2, 4\)"),
    ([0.25] * 4, r"must be a tensor of shape \(3, 4\), got list"),
])
def test_wrong_answers_from_a_transport_are_refused(answers: object, message: str) -> None:
    oracle = CallableOracle(lambda x: answers, num_classes=4)
    with pytest.raises(ConfigError, match=message):
        oracle(torch.rand(3, 1, 2, 2))
    assert oracle.queries == 0


def test_bad_settings(model: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match="a policy needs a server"):
        ModelOracle(model, policy=object())
    with pytest.raises(ConfigError, match="client_id must be a non-empty string"):
        ModelOracle(model, client_id="")
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        ModelOracle(model, batch_size=0)
    with pytest.raises(ConfigError, match="target must be an nn.Module or have answer"):
        ModelOracle(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot tell how many classes"):
        ModelOracle(torch.nn.Sequential(torch.nn.Flatten()))
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 1, got 0"):
        CallableOracle(lambda x: x, num_classes=0)
    with pytest.raises(ConfigError, match="needs a function"):
        CallableOracle("not callable", num_classes=2)  # type: ignore[arg-type]


def test_oracle_module_imports_nothing_above_core() -> None:
    """oracle.py is core: no defense, attacks, serve, bench or CLI imports, not even inside functions."""
    tree = ast.parse(Path(modelshield.oracle.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in imported if m.split(".")[0] == "modelshield"}
    assert ours and ours <= {"modelshield.errors", "modelshield.images"}, ours
