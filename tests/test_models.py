import pytest
import torch
from safetensors.torch import save_file

from modelshield.data import Normalization
from modelshield.errors import ConfigError, FormatError
from modelshield.models import CheckpointMeta, build_model, load_checkpoint, save_checkpoint, state_dict_fingerprint


@pytest.mark.parametrize("name", ["lenet5", "vgg", "resnet20"])
@pytest.mark.parametrize("channels, size, classes", [(1, 8, 10), (1, 28, 10), (3, 32, 100)])
def test_zoo_shapes(name, channels, size, classes) -> None:
    model = build_model(name, in_channels=channels, image_size=size, num_classes=classes)
    x = torch.rand(2, channels, size, size)
    assert model(x).shape == (2, classes)
    assert model.features(x).shape[1] == model.classifier.in_features


def test_unknown_model_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resnet20'"):
        build_model("resnet", in_channels=1, image_size=8, num_classes=10)


def test_normalization_is_inside_the_model() -> None:
    norm = Normalization((0.5,), (0.5,))
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=3, normalization=norm)
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(model(x), model.classifier(model.body(norm.apply(x))))


def _saved(tmp_path):
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=Normalization((0.3,), (0.4,)))
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                    normalization=Normalization((0.3,), (0.4,)), accuracy=0.9, seed=3, extra={"note": "x"})
    return model, save_checkpoint(tmp_path / "m.safetensors", model, meta)


def test_checkpoint_round_trip_bit_exact(tmp_path) -> None:
    model, path = _saved(tmp_path)
    loaded = load_checkpoint(path)
    assert state_dict_fingerprint(loaded.model.state_dict()) == state_dict_fingerprint(model.state_dict())
    assert loaded.meta.accuracy == 0.9 and loaded.meta.seed == 3 and loaded.meta.extra == {"note": "x"}
    assert loaded.meta.normalization == Normalization((0.3,), (0.4,))
    assert "torch" in loaded.meta.versions and not loaded.model.training


def test_corrupt_and_truncated_checkpoints(tmp_path) -> None:
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="trunc.safetensors"):
        load_checkpoint(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(FormatError, match="junk.safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")


def test_foreign_safetensors_and_missing_file(tmp_path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FormatError, match="not a modelshield checkpoint .no .modelshield. metadata"):
        load_checkpoint(tmp_path / "plain.safetensors")
    with pytest.raises(ConfigError, match="modelshield train"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_mismatched_weights(tmp_path) -> None:
    model = build_model("vgg", in_channels=1, image_size=8, num_classes=10)
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits")
    save_checkpoint(tmp_path / "m.safetensors", model, meta)
    with pytest.raises(FormatError, match="do not match architecture 'lenet5'"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_custom_module_checkpoint(tmp_path) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    meta = CheckpointMeta.for_model("custom", in_channels=1, image_size=8, num_classes=10, dataset="digits")
    path = save_checkpoint(tmp_path / "c.safetensors", net, meta)
    with pytest.raises(FormatError, match="model=..."):
        load_checkpoint(path)
    loaded = load_checkpoint(path, model=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    assert torch.equal(loaded.model[1].weight, net[1].weight)
