"""Demo stage ``lock``: lock the digits model, try it as a thief would, unlock it."""

from __future__ import annotations

import torch

from modelshield.attacks.key_recovery import recover_master_key
from modelshield.demo.context import DemoContext
from modelshield.errors import IntegrityError
from modelshield.keys import SecretKey
from modelshield.lock.evaluation import evaluate_locked
from modelshield.lock.locked import LockConfig, LockedModel, lock_model

__all__ = ["stage"]


def _raw(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy()) if flat.numel() else b""


def stage(ctx: DemoContext) -> list[tuple[str, str]]:
    """Lock, save, reload, evaluate as-is / with a wrong key / with the key; known-plaintext on both schedules."""
    key = SecretKey.generate()
    test = ctx.bundle.test
    path = lock_model(ctx.model, key, meta=ctx.meta).save(ctx.workdir / "digits-lenet5.mslock")
    locked = LockedModel.load(path)
    as_is = evaluate_locked(locked, test, model=ctx.model)
    try:
        locked.unlock(SecretKey.generate())
        wrong = "accepted (unexpected)"
    except IntegrityError:
        wrong = "refused before use (MAC check)"
    unlocked = evaluate_locked(locked, test, key=key, model=ctx.model)
    restored = locked.unlock(key)
    truth = ctx.model.state_dict()
    identical = all(_raw(restored[name]) == _raw(tensor) for name, tensor in truth.items())
    layer = "body.conv1.weight"
    known = {layer: truth[layer].reshape(-1)[:8]}
    weak = recover_master_key(lock_model(ctx.model, key, LockConfig("aes-expansion"), meta=ctx.meta), known)
    strong = recover_master_key(lock_model(ctx.model, key, LockConfig("ctr"), meta=ctx.meta), known)
    return [
        ("locked file", f"{path.stat().st_size / 1024:.0f} KiB, scheme ctr, 1 round, HMAC-SHA256"),
        ("accuracy, locked file as-is", f"{100 * as_is.accuracy:.1f}% ({as_is.nonfinite_rows}/{as_is.total} outputs NaN/Inf)"),
        ("wrong key", wrong),
        ("accuracy, unlocked with the key", f"{100 * unlocked.accuracy:.1f}% (bit-identical weights: {'yes' if identical else 'NO'})"),
        ("8 known weights vs aes-expansion", "master key recovered" if weak.verified else "not recovered"),
        ("8 known weights vs ctr", "master key recovered" if strong.verified else "nothing beyond the 8 known weights"),
    ]
