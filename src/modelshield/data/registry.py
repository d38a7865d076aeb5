"""Dataset names, where their files are looked for, and the deterministic splits.

Splits (documented and stable; ``split_seed`` 0 unless asked otherwise):

* Datasets with an official test set (MNIST, Fashion-MNIST, CIFAR): ``test`` is the official test set. The
  official training set is permuted with ``split_seed``; the first 1/12 is ``val``, the next 1/3 is
  ``attacker``, the rest (7/12) is ``train``. For MNIST that is 5,000 / 20,000 / 35,000 images.
* Datasets without one (digits, ImageFolder, synthetic): the permuted data first gives 20% to ``test``, then
  the same fractions as above.

``attacker`` is disjoint from everything the protected model was trained or selected on, so attacks
(fine-tuning data, extraction query pools) never see the victim's own training images.

Example:
    >>> bundle = load_dataset("digits")
    >>> bundle.info.num_classes, bundle.info.input_shape
    (10, (1, 8, 8))
    >>> sorted(len(bundle.split(s)) for s in ("train", "val", "attacker", "test"))
    [120, 359, 479, 839]
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from modelshield.data.cifar import read_cifar_batch
from modelshield.data.idx import read_idx
from modelshield.data.imagefolder import read_image_folder
from modelshield.data.synthetic import make_synthetic
from modelshield.data.types import DatasetBundle, DatasetInfo, Normalization, TensorData
from modelshield.errors import ConfigError, DatasetNotFound, did_you_mean

__all__ = ["DATA_ENV", "DATASET_NAMES", "load_dataset", "resolve_data_root"]

DATA_ENV = "MODELSHIELD_DATA"
VAL_FRACTION = 1 / 12
ATTACKER_FRACTION = 1 / 3
TEST_FRACTION = 0.2

_STATS = {
    "mnist": Normalization((0.1307,), (0.3081,)),
    "fashion-mnist": Normalization((0.2860,), (0.3530,)),
    "cifar10": Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_ALIASES = {"fmnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar-100": "cifar100"}
DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "synthetic", "imagefolder:<path>")


def resolve_data_root(root: str | os.PathLike[str] | None) -> Path | None:
    """The data root: the argument if given, else ``$MODELSHIELD_DATA``, else None."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def _need_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise DatasetNotFound(
            f"dataset {name!r} is read from disk and no data root is set: pass --data-root DIR "
            f"or set {DATA_ENV}=DIR (DIR holding {name}/ with the original files; nothing is downloaded)"
        )
    if not root.is_dir():
        raise DatasetNotFound(f"data root {root} does not exist: pass --data-root DIR or set {DATA_ENV}=DIR")
    return root


def _find(root: Path, folders: tuple[str, ...], stem: str) -> Path | None:
    for folder in folders:
        for candidate in (root / folder / f"{stem}.gz", root / folder / stem):
            if candidate.is_file():
                return candidate
    return None


def _load_idx_pair(name: str, root: Path | None) -> tuple[np.ndarray, ...]:
    base = _need_root(name, root)
    folders = (name, f"{name}/raw", name.upper(), f"{name.upper()}/raw", ".")
    parts = []
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        found = _find(base, folders, stem)
        if found is None:
            looked = ", ".join(str(base / f) for f in folders)
            raise DatasetNotFound(
                f"dataset {name!r}: {stem}(.gz) not found; looked in {looked}. Put the four original IDX files "
                f"in {base / name}/ or point --data-root / {DATA_ENV} at the folder that holds {name}/"
            )
        parts.append(read_idx(found))
    return tuple(parts)


def _load_cifar(name: str, root: Path | None) -> tuple[np.ndarray, ...]:
    base = _need_root(name, root)
    if name == "cifar10":
        folder, train_files, test_files, key = base / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"
    else:
        folder, train_files, test_files, key = base / "cifar-100-python", ["train"], ["test"], "fine_labels"
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFound(f"dataset {name!r}: {', '.join(missing)} not found in {folder}; extract the official python-version archive under the data root")
    train = [read_cifar_batch(folder / f, key) for f in train_files]
    test = [read_cifar_batch(folder / f, key) for f in test_files]
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
            np.concatenate([t[0] for t in test]), np.concatenate([t[1] for t in test]))


def _to_tensor(images: np.ndarray, labels: np.ndarray) -> TensorData:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return TensorData(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _split(full: TensorData, seed: int, with_test: bool) -> tuple[TensorData, TensorData, TensorData, TensorData | None]:
    n = len(full)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    start, test = 0, None
    if with_test:
        n_test = round(n * TEST_FRACTION)
        test, start = full[order[:n_test]], n_test
        n -= n_test
    n_val, n_att = round(n * VAL_FRACTION), round(n * ATTACKER_FRACTION)
    val = full[order[start : start + n_val]]
    attacker = full[order[start + n_val : start + n_val + n_att]]
    train = full[order[start + n_val + n_att :]]
    return train, val, attacker, test


def _bundle(name: str, train_full: TensorData, test: TensorData | None, classes: tuple[str, ...],
            stats: Normalization | None, seed: int) -> DatasetBundle:
    train, val, attacker, own_test = _split(train_full, seed, with_test=test is None)
    test = test if test is not None else own_test
    assert test is not None
    num_classes = len(classes) if classes else int(train_full.y.max()) + 1
    info = DatasetInfo(
        name=name, num_classes=num_classes, in_channels=int(train.x.shape[1]), image_size=int(train.x.shape[-1]),
        normalization=stats or Normalization.from_images(train.x), class_names=classes or tuple(str(i) for i in range(num_classes)),
    )
    return DatasetBundle(info, train, val, attacker, test)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str | None, split_seed: int) -> DatasetBundle:
    base = Path(root) if root is not None else None
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        full = TensorData(torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1), torch.from_numpy(digits.target).long())
        return _bundle(name, full, None, tuple(str(i) for i in range(10)), None, split_seed)
    if name in ("mnist", "fashion-mnist"):
        xtr, ytr, xte, yte = _load_idx_pair(name, base)
        classes = _FASHION if name == "fashion-mnist" else tuple(str(i) for i in range(10))
        return _bundle(name, _to_tensor(xtr, ytr), _to_tensor(xte, yte), classes, _STATS[name], split_seed)
    if name in ("cifar10", "cifar100"):
        xtr, ytr, xte, yte = _load_cifar(name, base)
        n_classes = 10 if name == "cifar10" else 100
        return _bundle(name, _to_tensor(xtr, ytr), _to_tensor(xte, yte), tuple(str(i) for i in range(n_classes)), _STATS[name], split_seed)
    if name == "synthetic":
        full = make_synthetic(2400, num_classes=4, channels=1, image_size=12, seed=split_seed)
        return _bundle(name, full, None, ("0", "1", "2", "3"), None, split_seed)
    if name.startswith("imagefolder:"):
        folder = Path(name.split(":", 1)[1])
        if not folder.is_absolute() and base is not None:
            folder = base / folder
        images, labels, classes = read_image_folder(folder)
        return _bundle(name, _to_tensor(images, labels), None, classes, None, split_seed)
    raise ConfigError(f"unknown dataset {name!r}{did_you_mean(name, DATASET_NAMES)}; known: {', '.join(DATASET_NAMES)}")


def load_dataset(name: str, root: str | os.PathLike[str] | None = None, *, split_seed: int = 0) -> DatasetBundle:
    """Load a dataset by name and split it deterministically (see the module docstring).

    Args:
        name: ``digits`` (bundled, no setup), ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``,
            ``synthetic``, or ``imagefolder:<path>`` (path relative to the data root unless absolute).
        root: the data root; default ``$MODELSHIELD_DATA``. Nothing is ever downloaded.
        split_seed: seed of the split permutation; keep 0 to share splits across runs and tools.

    Raises:
        ConfigError: unknown name.
        DatasetNotFound: the files are not where we looked (the message says where and how to fix it).
        FormatError: a file is malformed.
    """
    key = name.strip()
    key = _ALIASES.get(key.lower(), key.lower() if not key.startswith("imagefolder:") else key)
    resolved = resolve_data_root(root)
    return _load_cached(key, str(resolved) if resolved is not None else None, split_seed)


