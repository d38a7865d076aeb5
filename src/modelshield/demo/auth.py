"""Demo stage ``auth``: protect the digits model with AuthNet, then look at it as a thief would.

The bundled digits (839 training images of 8x8 pixels) are a small stage for AuthNet, whose tail must learn
to tell keyed from plain inputs; the numbers printed here are measured on the spot and weaker than on MNIST
(see ``bench/results/auth.md`` for the benchmark models).
"""

from __future__ import annotations

from modelshield.auth.embedding import AuthConfig, embed
from modelshield.auth.evaluation import evaluate_auth
from modelshield.auth.key import AuthKey
from modelshield.auth.keygen import KeyGenConfig
from modelshield.demo.context import DemoContext
from modelshield.errors import ConfigError
from modelshield.models import load_checkpoint, save_checkpoint
from modelshield.training import evaluate

__all__ = ["DEMO_CONFIG", "stage"]

# measured with the earlier recipe (no distillation, decoy ratio 1), kept for the digits
DEMO_CONFIG = AuthConfig(tail_epochs=60, tail_lr=3e-3, tail_batch_size=64, decoy_ratio=1.0, decoy_keys=1, distill=0.0,
                         key=KeyGenConfig(epochs=20, batch_size=32))


def stage(ctx: DemoContext) -> list[tuple[str, str]]:
    """Embed, save and reload (checkpoint + 0600 key file), evaluate with / without / with random keys."""
    from dataclasses import replace

    bundle = ctx.bundle
    config = replace(DEMO_CONFIG, seed=ctx.seed)
    result = embed(ctx.model, bundle.train, bundle.val, config=config, progress=not ctx.quiet)
    model_path = save_checkpoint(ctx.workdir / "digits-lenet5-auth.safetensors", result.model, ctx.meta)
    key_path = result.key.save(ctx.workdir / "digits-lenet5.authkey")
    model, key = load_checkpoint(model_path).model, AuthKey.load(key_path)
    report = evaluate_auth(model, key, bundle.test, random_keys=5, seed=ctx.seed + 1, verify=True)
    try:
        key.check_model(ctx.model)
        wrong_model = "accepted (unexpected)"
    except ConfigError:
        wrong_model = "refused (model fingerprint differs)"
    clean = evaluate(ctx.model, bundle.test).accuracy
    params_equal = sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ctx.model.parameters())
    mode = oct(key_path.stat().st_mode & 0o777)
    return [
        ("gate / bits", f"{result.split.gate} {result.split.gate_shape}, bits {list(result.bits.channels)}"),
        ("accuracy clean / with key", f"{100 * clean:.1f}% / {100 * report.legit:.1f}%"),
        ("accuracy without key", f"{100 * report.unauthorized:.1f}%"),
        ("5 random keys (mean / best)", f"{100 * (report.random_mean or 0):.1f}% / {100 * (report.random_max or 0):.1f}%"),
        ("key file", f"{key_path.stat().st_size} bytes, mode {mode[2:]}, fingerprint {key.fingerprint}"),
        ("key on the unprotected model", wrong_model),
        ("architecture / parameters", "unchanged" if params_equal else "CHANGED"),
        ("embedding time", f"{result.timings['total']:.1f} s"),
    ]

