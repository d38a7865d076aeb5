"""Gate selection by module name, the traced head/tail split, and the tail runner."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelshield.auth import default_gate, gate_candidates, gate_output, trace_gate
from modelshield.auth.gate import TailRunner, forward_macs
from modelshield.errors import ConfigError
from modelshield.models import build_model

from .conftest import tiny_cnn


@pytest.mark.parametrize(("arch", "gate"), [("lenet5", "body.pool1"), ("vgg", "body.block2"), ("resnet20", "body.layer3.0")])
def test_every_zoo_model_has_a_fixed_default_gate(arch: str, gate: str) -> None:
    # ResNet-20: body.layer3.0 protected on validation; its former body.layer3 (pooling + classifier) did not
    assert default_gate(build_model(arch, in_channels=1, image_size=16, num_classes=5)) == gate


@pytest.mark.parametrize(("arch", "gate"), [("lenet5", "body.pool1"), ("vgg", "body.block2"), ("resnet20", "body.layer3.0"), ("resnet20", "body.layer3.1")])
def test_zoo_gates_split_cleanly(arch: str, gate: str) -> None:
    model = build_model(arch, in_channels=1, image_size=16, num_classes=5)
    split = trace_gate(model, gate, torch.rand(3, 1, 16, 16))
    assert split.cacheable
    assert "classifier" in split.tail and "normalize" in split.head


def test_models_outside_the_zoo_default_to_auto() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    assert default_gate(model) == "auto"
    assert gate_candidates(model, torch.rand(2, 1, 14, 14)) == ("2",)  # the one pooling stage; a bare conv is no block
    with pytest.raises(ConfigError, match="no block output"):
        gate_candidates(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(2, 1, 2, 2))


class Staged(nn.Module):
    """Not a Sequential and not in the zoo: a stem, two stages (one a residual block) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.stage1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.res = nn.ModuleDict({"a": nn.Conv2d(4, 4, 3, padding=1), "b": nn.Conv2d(4, 4, 3, padding=1)})
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(torch.relu(self.stem(x)))
        x = torch.relu(x + self.res["b"](torch.relu(self.res["a"](x))))
        return self.head(self.pool(x).flatten(1))


def test_candidates_of_any_module_follow_execution_order_and_skip_non_cuts() -> None:
    x = torch.rand(2, 1, 12, 12)
    # stage1 (its pool ends on the same tensor: the outermost name is kept), then the pool; the residual
    # branch's convolutions are no blocks, and the ModuleDict never runs as a module
    assert gate_candidates(Staged(), x) == ("stage1", "pool")
    resnet = build_model("resnet20", in_channels=1, image_size=16, num_classes=3)
    found = gate_candidates(resnet, torch.rand(2, 1, 16, 16))
    assert found[-3:] == ("body.layer3.0", "body.layer3.1", "body.layer3") and "body.layer1.0" in found
    assert not any("shortcut" in g for g in found)  # inside a residual block: not a cut of the graph
    assert all(trace_gate(resnet, g, torch.rand(2, 1, 16, 16)).cacheable for g in found)


def test_forward_macs_counts_convolutions_and_linear_layers() -> None:
    model = build_model("lenet5", in_channels=1, image_size=28, num_classes=10)
    x = torch.rand(2, 1, 28, 28)
    # conv1 6x28x28 outputs x 25 taps, conv2 16x10x10 x 150, fc 400x120, 120x84, 84x10
    expected = 6 * 784 * 25 + 1600 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert forward_macs(model, x) == expected
    tail = trace_gate(model, "body.pool2", x).tail
    assert forward_macs(model, x, tail) == 400 * 120 + 120 * 84 + 84 * 10


def test_split_follows_execution_order() -> None:
    model = build_model("lenet5", in_channels=1, image_size=28, num_classes=10)
    split = trace_gate(model, "body.pool2", torch.rand(2, 1, 28, 28))
    assert split.head == ("normalize", "body.conv1", "body.relu1", "body.pool1", "body.conv2", "body.relu2", "body.pool2")
    assert split.tail == ("body.flatten", "body.fc1", "body.relu3", "body.fc2", "body.relu4", "classifier")
    assert split.gate_shape == (16, 5, 5) and split.channels == 16
    names = {id(p) for p in split.tail_parameters(model)}
    assert names == {id(p) for m in (model.body.fc1, model.body.fc2, model.classifier) for p in m.parameters()}


def test_freeze_and_train_mode() -> None:
    model = build_model("vgg", in_channels=1, image_size=16, num_classes=3)
    split = trace_gate(model, "body.block2", torch.rand(2, 1, 16, 16))
    split.freeze_head(model)
    assert not any(p.requires_grad for p in model.body.block1.parameters())
    assert all(p.requires_grad for p in model.body.block3.parameters())
    split.set_train_mode(model)
    assert not model.body.block1.bn1.training and not model.body.block2.bn1.training
    assert model.body.block3.bn1.training and model.body.dropout.training


def test_tail_runner_matches_the_full_model() -> None:
    model = tiny_cnn().eval()
    x = torch.rand(5, 1, 12, 12)
    split = trace_gate(model, "2", x)
    with torch.no_grad():
        assert torch.allclose(TailRunner(model, split, x)(gate_output(model, "2", x)), model(x), atol=1e-6)


def test_residual_gate_inside_a_block_is_not_cacheable() -> None:
    model = build_model("resnet20", in_channels=1, image_size=8, num_classes=3)
    split = trace_gate(model, "body.layer2.0.conv1", torch.rand(3, 1, 8, 8))
    assert not split.cacheable  # the block's shortcut reads the input from before the gate


def test_bad_gates() -> None:
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=3)
    with pytest.raises(ConfigError, match="did you mean 'body.pool"):
        trace_gate(model, "body.pool", torch.rand(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="no tail"):
        trace_gate(model, "classifier", torch.rand(2, 1, 8, 8))

    shared = nn.Linear(4, 4)
    looped = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ConfigError, match="runs"):
        trace_gate(looped, "1", torch.rand(2, 4))
