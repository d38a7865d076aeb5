"""Authentication bits: lowest live channels, dead channels skipped, optional secret draw from a pool."""

from __future__ import annotations

import pytest
import torch

from modelshield.auth import channel_means, select_bits
from modelshield.auth.bits import gate_channel_mean
from modelshield.errors import ConfigError
from modelshield.models import build_model


def test_lowest_live_channels_and_targets() -> None:
    means = torch.tensor([0.0, 0.9, 0.2, -0.1, 0.5, 3.0])
    bits = select_bits(means, 2, gamma=2.0)
    assert bits.channels == (2, 4) and bits.a_max == 3.0 and bits.target == 6.0
    assert bits.target_vector().tolist() == [0, 0, 6, 0, 6, 0]


def test_pool_draw_is_seeded_and_stays_in_the_pool() -> None:
    means = torch.arange(1, 21, dtype=torch.float32)
    draws = {select_bits(means, 3, 1.0, pool=12, generator=torch.Generator().manual_seed(s)).channels for s in range(8)}
    assert len(draws) > 1
    assert all(max(d) < 12 for d in draws)
    again = select_bits(means, 3, 1.0, pool=12, generator=torch.Generator().manual_seed(0)).channels
    assert again == select_bits(means, 3, 1.0, pool=12, generator=torch.Generator().manual_seed(0)).channels


def test_errors() -> None:
    with pytest.raises(ConfigError, match="live channels"):
        select_bits(torch.tensor([0.0, 0.0, 1.0]), 2, 1.0)
    with pytest.raises(ConfigError):
        select_bits(torch.ones(4), 3, 1.0, pool=2)
    with pytest.raises(ConfigError, match="gamma"):
        select_bits(torch.ones(4), 1, 0.0)


def test_channel_means_agree_with_a_direct_computation() -> None:
    model = build_model("lenet5", in_channels=1, image_size=12, num_classes=3).eval()
    x = torch.rand(20, 1, 12, 12)
    with torch.no_grad():
        direct = model.body.pool1(model.body.relu1(model.body.conv1(model.normalize(x)))).mean(dim=(0, 2, 3))
    assert torch.allclose(channel_means(model, "body.pool1", x, batch_size=7), direct, atol=1e-6)
    assert gate_channel_mean(torch.ones(2, 5)).shape == (2, 5)
