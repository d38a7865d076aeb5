"""Fixtures for the Deep-Lock tests: fixed keys and a small state dict covering every dtype and edge value."""

from __future__ import annotations

import math

import pytest
import torch

from modelshield.keys import SecretKey


def special_values(dtype: torch.dtype) -> torch.Tensor:
    """NaN (two payloads), +-Inf, -0.0, subnormals, extremes, ordinary values; as raw bits where needed."""
    info = torch.finfo(dtype)
    base = torch.tensor([0.0, -0.0, 1.0, -2.5, math.inf, -math.inf, math.nan, info.max, info.min, info.tiny,
                         info.tiny / 4, info.eps], dtype=torch.float64).to(dtype)
    # a NaN with a non-default payload, written through the integer view
    int_dtype = {2: torch.int16, 4: torch.int32, 8: torch.int64}[base.element_size()]
    odd_nan = torch.empty(1, dtype=dtype)
    bits = {2: 0x7C01 if dtype == torch.float16 else 0x7F81, 4: 0x7FA00001, 8: 0x7FF0000000000123}[base.element_size()]
    odd_nan.view(int_dtype)[0] = bits
    return torch.cat([base, odd_nan])


@pytest.fixture
def key() -> SecretKey:
    return SecretKey(bytes(range(32)))


@pytest.fixture
def other_key() -> SecretKey:
    return SecretKey(bytes(range(1, 33)))


@pytest.fixture
def mixed_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "conv.bias": torch.zeros(4),
        "half": torch.randn(5, 7, generator=g).half(),
        "brain": torch.randn(9, generator=g).bfloat16(),
        "double": torch.randn(3, 3, generator=g).double(),
        "bn.running_mean": torch.randn(4, generator=g),
        "bn.running_var": torch.rand(4, generator=g) + 0.5,
        "bn.num_batches_tracked": torch.tensor(123, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 5),
        "specials32": special_values(torch.float32),
        "specials16": special_values(torch.float16),
        "specialsbf": special_values(torch.bfloat16),
        "specials64": special_values(torch.float64),
    }


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN payloads included), same dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return bytes(a.contiguous().reshape(-1).view(torch.uint8).numpy()) == bytes(b.contiguous().reshape(-1).view(torch.uint8).numpy())
