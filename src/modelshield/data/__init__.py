"""Datasets: loaders for on-disk formats, bundled digits, synthetic data, deterministic splits.

Nothing is downloaded: on-disk datasets are read from a data root (``--data-root`` or ``MODELSHIELD_DATA``).
"""

from modelshield.data.registry import DATA_ENV, DATASET_NAMES, load_dataset, resolve_data_root
from modelshield.data.synthetic import make_synthetic
from modelshield.data.types import DatasetBundle, DatasetInfo, Normalization, TensorData

__all__ = [
    "DATASET_NAMES",
    "DATA_ENV",
    "DatasetBundle",
    "DatasetInfo",
    "Normalization",
    "TensorData",
    "load_dataset",
    "make_synthetic",
    "resolve_data_root",
]
