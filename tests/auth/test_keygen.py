"""Key generation and the negatives the tail learns to reject."""

from __future__ import annotations

import pytest
import torch

from modelshield.auth import AuthKey, KeyGenConfig, channel_means, generate_key, select_bits
from modelshield.auth.embedding import AuthConfig, near_keyed
from modelshield.auth.key import mask_from_raw
from modelshield.data import Normalization, make_synthetic
from modelshield.errors import ConfigError

from .conftest import tiny_cnn


def test_near_misses_mix_the_key_with_random_or_no_key_pixels() -> None:
    norm = Normalization((0.5,), (0.25,))
    key = AuthKey.random((1, 8, 8), norm, generator=torch.Generator().manual_seed(0))
    x = torch.rand(64, 1, 8, 8)
    near = near_keyed(x, key, torch.Generator().manual_seed(1))
    keyed = key.apply(x)
    from_key = torch.isclose(near, keyed, atol=1e-5)
    # odd images: every pixel is either the key's or untouched; even images: the rest are random-key pixels
    odd = torch.arange(64) % 2 == 1
    assert bool((from_key | torch.isclose(near, x, atol=1e-5))[odd].all())
    assert not bool((from_key | torch.isclose(near, x, atol=1e-5))[~odd].all())
    share = from_key.flatten(1).float().mean(1)
    assert 0.25 < float(share.mean()) < 0.55  # share ~ U[0, 0.8] per image
    assert float(share.max()) < 0.95  # never the whole key


def test_identity_start_raises_the_bits_and_leaves_the_rest() -> None:
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = make_synthetic(256, num_classes=4, image_size=12, seed=0).x
    norm = Normalization.identity(1)
    bits = select_bits(channel_means(model, "2", x), 2, gamma=2.0)
    ours = generate_key(model, "2", x, bits, norm, KeyGenConfig(seed=0))
    released = generate_key(model, "2", x, bits, norm, KeyGenConfig.released(seed=0))
    # the bits rise and the other channels are left far more alone than by a noise-like random-start key
    assert ours.bit_change > 0
    assert ours.other_change < 0.5 * released.other_change
    # the identity start grows the mask from (almost) nothing
    start = generate_key(model, "2", x, bits, norm, KeyGenConfig(seed=0, epochs=1, batch_size=256))
    assert start.mask_mean < ours.mask_mean


def test_a_partial_support_keeps_the_mask_on_a_secret_pixel_subset() -> None:
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = make_synthetic(128, num_classes=4, image_size=12, seed=0).x
    bits = select_bits(channel_means(model, "2", x), 2, gamma=2.0)
    floor = float(mask_from_raw(torch.tensor(0.0)))
    keys = [generate_key(model, "2", x, bits, Normalization.identity(1), KeyGenConfig(seed=s, epochs=2, support=0.5)).key
            for s in (0, 1)]
    used = [k.mask[0] > floor + 1e-6 for k in keys]
    assert all(0 < float(u.float().mean()) <= 0.65 for u in used)  # about half the pixels at most
    assert not torch.equal(used[0], used[1])  # another seed, other pixels
    with pytest.raises(ConfigError, match="support"):
        KeyGenConfig(support=0)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="start"):
        KeyGenConfig(start="zeros")
    with pytest.raises(ConfigError, match="keyed_weight"):
        AuthConfig(keyed_weight=0)
    with pytest.raises(ConfigError, match="near_share"):
        AuthConfig(near_share=1.5)


def test_cli_defaults_follow_the_library_defaults() -> None:
    from modelshield.cli import build_parser

    args = build_parser().parse_args(["auth", "embed", "m.safetensors", "--out", "a", "--key-out", "b"])
    config, key = AuthConfig(), KeyGenConfig()
    assert (args.tail_epochs, args.decoy_keys, args.near_share, args.keyed_weight, args.decoy_ratio, args.key_epochs, args.distill,
            args.key_images, args.train_images, args.gate, args.gamma, args.tail_lr) == \
        (config.tail_epochs, config.decoy_keys, config.near_share, config.keyed_weight, config.decoy_ratio, key.epochs,
         config.distill, config.key_images, config.train_images, config.gate, config.gamma, config.tail_lr)
