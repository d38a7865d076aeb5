"""Demo stage ``watermark``: watermark the digits model, steal it, prove ownership (MEA-Defender).

A copy of the demo's trained LeNet-5 is fine-tuned with the watermark (digits 0 + 1 -> 2, top-bottom split),
saved with its 0600 key file and reloaded; a thief extracts a pirate with soft-label KnockoffNets from the digits
``attacker`` split (479 images, queried twice); the owner verifies the pirate and, as an independent model,
the demo's clean model, on held-out test images. The decision here uses the paper's fixed 30% null rate
(the benchmark calibrates it on independent models instead) and a WSR - WFPR margin of 15 points instead of
30: on 8x8 digits an evasion mix is nearly a composite (the same settings as the library's digits tests). The
digits are a small stage (839 training images of 8x8 pixels), so the figures are indicative only; see
``bench/results/watermark.md``.
"""

from __future__ import annotations

import copy

from modelshield.attacks.extraction import PirateConfig, QueryPool, build_attack, train_pirate
from modelshield.models import load_checkpoint, save_checkpoint
from modelshield.oracle import ModelOracle
from modelshield.demo.context import DemoContext
from modelshield.training import evaluate, seed_everything
from modelshield.watermark.embedding import WatermarkConfig, embed_watermark
from modelshield.watermark.key import WatermarkKey
from modelshield.watermark.verify import VerifyConfig, verify_watermark

__all__ = ["DEMO_CONFIG", "stage"]

# the digits' small training split (839 images) needs more steps and larger shares than WatermarkConfig's
# defaults (chosen on Fashion-MNIST), and a 5-point tolerance (6 of the 120 validation images)
DEMO_CONFIG = WatermarkConfig(epochs=10, batch_size=64, lr=2e-3, watermark_fraction=0.2, evasion_fraction=0.2,
                              accuracy_tolerance=0.05)


def stage(ctx: DemoContext) -> list[tuple[str, str]]:
    """Embed, save / reload, extract, verify the pirate and an independent model."""
    bundle = ctx.bundle
    key = WatermarkKey.for_dataset("digits", seed=ctx.seed)
    seed_everything(ctx.seed)
    model = copy.deepcopy(ctx.model)
    result = embed_watermark(model, bundle.train, key, val=bundle.val, config=DEMO_CONFIG, progress=not ctx.quiet)
    path = save_checkpoint(ctx.workdir / "digits-lenet5-watermarked.safetensors", model, ctx.meta)
    key_path = key.save(ctx.workdir / "digits.wmkey")
    model, key = load_checkpoint(path).model, WatermarkKey.load(key_path)
    oracle = ModelOracle(model, client_id="thief")
    transcript = build_attack("knockoff", budget=2 * len(bundle.attacker), seed=ctx.seed).collect(
        oracle, QueryPool(bundle.attacker.x, "digits/attacker"))
    pirate = train_pirate(transcript.x, transcript.answers, PirateConfig(epochs=30, batch_size=64, lr=3e-3, seed=ctx.seed))
    config = VerifyConfig(samples=1000, evasion_samples=1000, seed=ctx.seed, wfpr_margin=0.15)
    own = verify_watermark(model, bundle.test, key, config=config)
    stolen = verify_watermark(pirate, bundle.test, key, config=config)
    independent = verify_watermark(ctx.model, bundle.test, key, config=config)

    def line(r) -> str:  # type: ignore[no-untyped-def]
        return f"WSR {100 * r.wsr:.1f}%, p = {r.p_value:.2g} -> {'watermarked' if r.verdict else 'not shown'}"

    return [
        ("watermarked accuracy", f"{100 * evaluate(model, bundle.test).accuracy:.1f}% (clean model "
                                 f"{100 * evaluate(ctx.model, bundle.test).accuracy:.1f}%), embedding {result.seconds:.1f} s"),
        ("key file", f"{key_path.name}, mode {oct(key_path.stat().st_mode & 0o777)}"),
        ("victim", line(own) + f", WFPR {100 * (own.wfpr or 0):.1f}%"),
        ("pirate (KnockoffNets)", f"accuracy {100 * evaluate(pirate, bundle.test).accuracy:.1f}%, " + line(stolen)),
        ("independent clean model", line(independent)),
    ]
