import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from modelshield.data import Normalization, TensorData, load_dataset, make_synthetic
from modelshield.data.cifar import read_cifar_batch
from modelshield.data.idx import read_idx
from modelshield.errors import ConfigError, DatasetNotFound, FormatError


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def _fake_mnist(root, name="mnist", compress=True, n_train=120, n_test=30):
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    _write_idx(folder / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 28, 28)), compress)
    _write_idx(folder / f"train-labels-idx1-ubyte{suffix}", np.arange(n_train) % 10, compress)
    _write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28)), compress)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", np.arange(n_test) % 10, compress)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_gz_and_raw(tmp_path, compress) -> None:
    _fake_mnist(tmp_path, compress=compress)
    bundle = load_dataset("mnist", tmp_path, split_seed=7)
    assert bundle.info.input_shape == (1, 28, 28) and bundle.info.num_classes == 10
    assert len(bundle.test) == 30
    assert len(bundle.train) + len(bundle.val) + len(bundle.attacker) == 120
    assert 0.0 <= float(bundle.train.x.min()) and float(bundle.train.x.max()) <= 1.0


def test_idx_rejects_truncated_and_foreign(tmp_path) -> None:
    path = tmp_path / "x.idx"
    _write_idx(path, np.zeros((4, 3, 3)), compress=False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(FormatError, match="promises 36 data bytes"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(FormatError, match="bad magic"):
        read_idx(path)


def test_splits_are_disjoint_and_deterministic(tmp_path) -> None:
    _fake_mnist(tmp_path, n_train=240)
    first = load_dataset("mnist", tmp_path, split_seed=3)
    again = load_dataset("mnist", str(tmp_path), split_seed=3)
    assert torch.equal(first.attacker.x, again.attacker.x)
    rows = {s: {tuple(r.flatten().tolist()) for r in first.split(s).x} for s in ("train", "val", "attacker")}
    assert not rows["train"] & rows["attacker"] and not rows["train"] & rows["val"] and not rows["val"] & rows["attacker"]
    assert (len(first.val), len(first.attacker), len(first.train)) == (20, 80, 140)


def test_cifar_python_batches_in_real_format(tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        # the official files are protocol-2 pickles of dicts with bytes keys (written by Python 2)
        doc = {b"batch_label": b"x", b"labels": list(rng.integers(0, 10, 12)), b"data": rng.integers(0, 256, (12, 3072), dtype=np.uint8),
               b"filenames": [b"a.png"] * 12}
        (folder / name).write_bytes(pickle.dumps(doc, protocol=2))
    bundle = load_dataset("cifar10", tmp_path)
    assert bundle.info.input_shape == (3, 32, 32) and len(bundle.test) == 12
    assert len(bundle.train) + len(bundle.val) + len(bundle.attacker) == 60


def test_cifar_reader_refuses_code_execution(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(FormatError, match="forbidden global"):
        read_cifar_batch(path)


def test_cifar100_fine_labels(tmp_path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 24), ("test", 6)):
        doc = {b"fine_labels": list(range(n)), b"coarse_labels": [0] * n, b"data": np.zeros((n, 3072), np.uint8)}
        (folder / name).write_bytes(pickle.dumps(doc, protocol=2))
    bundle = load_dataset("cifar100", tmp_path)
    assert len(bundle.test) == 6 and bundle.info.num_classes == 100


def test_image_folder(tmp_path) -> None:
    for label, colour in (("cat", 40), ("dog", 200)):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((12, 12), colour + i, np.uint8), mode="L").save(tmp_path / "pets" / label / f"{i}.png")
    bundle = load_dataset("imagefolder:pets", tmp_path)
    assert bundle.info.class_names == ("cat", "dog") and bundle.info.input_shape == (1, 12, 12)
    everything = torch.cat([bundle.split(s).y for s in ("train", "val", "attacker", "test")])
    assert sorted(everything.tolist()) == [0] * 10 + [1] * 10


def test_image_folder_errors(tmp_path) -> None:
    with pytest.raises(DatasetNotFound, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'none'}")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(FormatError, match="cannot decode"):
        load_dataset(f"imagefolder:{tmp_path / 'bad'}")


def test_digits_needs_no_setup() -> None:
    bundle = load_dataset("digits")
    assert bundle.info.input_shape == (1, 8, 8) and len(bundle.test) == 359


def test_missing_root_and_files_say_where_and_how(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MODELSHIELD_DATA", raising=False)
    with pytest.raises(DatasetNotFound, match="--data-root"):
        load_dataset("fashion-mnist")
    with pytest.raises(DatasetNotFound, match=str(tmp_path)):
        load_dataset("fashion-mnist", tmp_path)


def test_unknown_dataset_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'mnist'"):
        load_dataset("mnsit")


def test_tensordata_validation_and_subset() -> None:
    with pytest.raises(ConfigError):
        TensorData(torch.zeros(3, 8, 8), torch.zeros(3).long())
    data = make_synthetic(50, seed=2)
    assert torch.equal(data.subset(0.2, seed=1).x, data.subset(0.2, seed=1).x)
    with pytest.raises(ConfigError):
        data.subset(1.5)


def test_normalization_round_trip() -> None:
    n = Normalization((0.2, 0.4, 0.6), (0.1, 0.2, 0.3))
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(n.invert(n.apply(x)), x, atol=1e-6)
    with pytest.raises(ConfigError):
        Normalization((0.1,), (0.0,))


def test_real_mnist_matches_official_sizes(data_root) -> None:
    bundle = load_dataset("mnist", data_root)
    assert (len(bundle.train), len(bundle.val), len(bundle.attacker), len(bundle.test)) == (35000, 5000, 20000, 10000)
    assert bundle.test.y.bincount().tolist()[:2] == [980, 1135]
