"""The black-box oracle: counting, budget, client id, output mode, batching order."""

from __future__ import annotations

import pytest
import torch

from modelshield.defense import Defense, NoDefense, ProtectedModel
from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.models import build_model
from modelshield.oracle import ModelOracle


class Recorder(Defense):
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def answer(self, x, logits, features, client_id):  # type: ignore[no-untyped-def]
        self.calls.append((client_id, x.shape[0]))
        return torch.softmax(logits, dim=1)


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lenet5", in_channels=1, image_size=8, num_classes=10).eval()


def test_counts_and_budget_boundary(model: torch.nn.Module) -> None:
    oracle = ModelOracle(model, budget=10)
    oracle(torch.rand(4, 1, 8, 8))
    oracle(torch.rand(6, 1, 8, 8))  # exactly the budget
    assert (oracle.queries, oracle.remaining) == (10, 0)
    with pytest.raises(BudgetExceeded, match="1 more queries asked, 0 of 10 left"):
        oracle(torch.rand(1, 1, 8, 8))
    assert oracle.queries == 10


def test_refused_batch_is_not_answered_nor_counted(model: torch.nn.Module) -> None:
    defense = Recorder()
    oracle = ModelOracle(model, defense, budget=5, client_id="eve")
    with pytest.raises(BudgetExceeded):
        oracle(torch.rand(6, 1, 8, 8))
    assert oracle.queries == 0 and defense.calls == []
    oracle(torch.rand(5, 1, 8, 8))
    assert defense.calls == [("eve", 5)]


def test_failed_answer_is_not_counted(model: torch.nn.Module) -> None:
    oracle = ModelOracle(model, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match=r"shape \(N, 1, 8, 8\)"):
        oracle(torch.rand(3, 1, 9, 9))
    with pytest.raises(ConfigError, match="NaN"):
        oracle(torch.full((2, 1, 8, 8), float("nan")))
    assert oracle.queries == 0


def test_label_mode_is_one_hot_of_probability_mode(model: torch.nn.Module) -> None:
    x = torch.rand(20, 1, 8, 8)
    probs = ModelOracle(model)(x)
    labels = ModelOracle(model, output="label")(x)
    assert torch.equal(labels.argmax(1), probs.argmax(1))
    assert torch.equal(labels.sum(1), torch.ones(20)) and set(labels.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(probs, torch.softmax(model(x), 1), atol=1e-6)


def test_chunks_keep_order_and_client(model: torch.nn.Module) -> None:
    x = torch.rand(23, 1, 8, 8)
    defense = Recorder()
    small = ModelOracle(model, defense, batch_size=5, client_id="c1")(x)
    big = ProtectedModel(model, NoDefense(), max_batch=100).answer(x, "c2")
    assert torch.allclose(small, big, atol=1e-6)
    assert defense.calls == [("c1", 5)] * 4 + [("c1", 3)]


@pytest.mark.parametrize("kwargs, message", [
    ({"output": "logits"}, "output must be one of"),
    ({"budget": -1}, "budget must be"),
    ({"client_id": ""}, "client_id"),
    ({"batch_size": 0}, "max_batch"),
])
def test_bad_settings(model: torch.nn.Module, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelOracle(model, **kwargs)
