"""Validation sweep of the watermark embedding recipe (Fashion-MNIST, LeNet-5). Validation split only.

Each trial fine-tunes (or trains) a copy of the bench's clean LeNet-5 (the watermark suite's clean model, the
harness's ``trained_model``) with one :class:`WatermarkConfig`, then steals it with distillation (soft labels,
T = 4) from the ``attacker`` split and scores victim and pirate on the ``val`` split: accuracy, WSR (1,000
fresh composites), WFPR (1,000 evasion mixes). Nothing here reads the ``test`` split. Results are cached per
trial under ``bench/cache/watermark-sweep/`` (resumable) and printed as a Markdown table.

Usage (from the repository root)::

    PYTHONPATH=src OMP_NUM_THREADS=1 MODELSHIELD_DATA=/path/to/datasets \\
        python bench/dev/watermark_sweep.py [TRIAL ...] [--queries 5000] [--table]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from modelshield.attacks.extraction import PirateConfig, QueryPool, build_attack, train_pirate
from modelshield.bench.harness import BenchContext, markdown_table
from modelshield.bench.watermark_suite import ARCH, FULL
from modelshield.models import build_model
from modelshield.oracle import ModelOracle
from modelshield.training import evaluate, seed_everything
from modelshield.watermark import WatermarkConfig, WatermarkKey, count_target, embed_watermark

DATASET = "fashion-mnist"
SAMPLES = 1000
BASE = WatermarkConfig(com_weight=0.1)  # the trials set every swept field explicitly
# name -> (config, start): "clean" = fine-tune the clean model, "scratch" = a fresh LeNet-5
TRIALS: dict[str, tuple[WatermarkConfig, str]] = {
    # round 1: one cross-entropy over the mixed batch + L_com with the reverse KL, KL(f(x_wm) || f(x_ref))
    "ft-w10-e5-c0.1rev-lr5e-4-3ep": (replace(BASE, watermark_fraction=0.1, evasion_fraction=0.05, com_weight=0.1, com_kl="reverse", lr=5e-4, epochs=3), "clean"),
    "ft-w10-e5-c0.5rev-lr5e-4-3ep": (replace(BASE, watermark_fraction=0.1, evasion_fraction=0.05, com_weight=0.5, com_kl="reverse", lr=5e-4, epochs=3), "clean"),
    # round 2: forward KL, KL(f(x_ref) || f(x_wm)); larger steps
    "ft-w10-e5-c0-lr5e-4-3ep": (replace(BASE, watermark_fraction=0.1, evasion_fraction=0.05, com_weight=0.0, lr=5e-4, epochs=3), "clean"),
    "ft-w10-e5-c0.1-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.1, evasion_fraction=0.05, com_weight=0.1, lr=1e-3, epochs=3), "clean"),
    "ft-w20-e10-c0.1-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.2, evasion_fraction=0.1, com_weight=0.1, lr=1e-3, epochs=3), "clean"),
    "ft-w20-e10-c0.3-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.2, evasion_fraction=0.1, com_weight=0.3, lr=1e-3, epochs=3), "clean"),
    "ft-w20-e10-c0.1-lr1e-3-6ep": (replace(BASE, watermark_fraction=0.2, evasion_fraction=0.1, com_weight=0.1, lr=1e-3, epochs=6), "clean"),
    # round 3: L_com scaled by the composites' share of the mixed batch (com_weight relative to a composite's CE)
    "ft-w20-e20-c0.1s-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.2, evasion_fraction=0.2, com_weight=0.1, lr=1e-3, epochs=3), "clean"),
    "ft-w20-e20-c0.5s-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.2, evasion_fraction=0.2, com_weight=0.5, lr=1e-3, epochs=3), "clean"),
    "ft-w20-e20-c0-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.2, evasion_fraction=0.2, com_weight=0.0, lr=1e-3, epochs=3), "clean"),
    # round 4: larger shares (composites and evasion mixes), with and without L_com
    "ft-w30-e30-c0.1s-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.3, evasion_fraction=0.3, com_weight=0.1, lr=1e-3, epochs=3), "clean"),
    "ft-w30-e30-c0-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.3, evasion_fraction=0.3, com_weight=0.0, lr=1e-3, epochs=3), "clean"),
    # the authors' two-gradient MGDA (utility vs watermark side), utility weight floored at 0.5
    "ft-mgda-head-w20-e10-c0.1-lr1e-3-3ep": (replace(BASE, mgda="head", watermark_fraction=0.2, evasion_fraction=0.1, com_weight=0.1, lr=1e-3, epochs=3), "clean"),
    # round 5: soft labels on the clean source images, y_t as their runner-up (source_target_share)
    "ft-w30-e30-s0.2-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.3, evasion_fraction=0.3, com_weight=0.0, source_target_share=0.2, lr=1e-3, epochs=3), "clean"),
    "ft-w30-e30-s0.35-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.3, evasion_fraction=0.3, com_weight=0.0, source_target_share=0.35, lr=1e-3, epochs=3), "clean"),
    "ft-w30-e30-s0.1-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.3, evasion_fraction=0.3, com_weight=0.0, source_target_share=0.1, lr=1e-3, epochs=3), "clean"),
    "ft-w30-e30-s0.2-lr5e-4-3ep": (replace(BASE, watermark_fraction=0.3, evasion_fraction=0.3, com_weight=0.0, source_target_share=0.2, lr=5e-4, epochs=3), "clean"),
    "ft-w30-e30-s0.2-lr1e-3-6ep": (replace(BASE, watermark_fraction=0.3, evasion_fraction=0.3, com_weight=0.0, source_target_share=0.2, lr=1e-3, epochs=6), "clean"),
    "ft-w30-e60-s0.2-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.3, evasion_fraction=0.6, com_weight=0.0, source_target_share=0.2, lr=1e-3, epochs=3), "clean"),
    "ft-w50-e50-s0.2-lr1e-3-3ep": (replace(BASE, watermark_fraction=0.5, evasion_fraction=0.5, com_weight=0.0, source_target_share=0.2, lr=1e-3, epochs=3), "clean"),
    # from scratch with the mixed cross-entropy (the bench's 12-epoch recipe)
    "scratch-w10-e5-c0.1-lr1e-3-12ep": (WatermarkConfig.from_scratch(watermark_fraction=0.1, evasion_fraction=0.05, com_weight=0.1), "scratch"),
}


def _rates(model: torch.nn.Module, val: Any, key: WatermarkKey) -> dict[str, float]:
    return {"accuracy": evaluate(model, val).accuracy,
            "wsr": count_target(model, val, key, samples=SAMPLES, seed=11) / SAMPLES,
            "wfpr": count_target(model, val, key, samples=SAMPLES, seed=12, evasion=True) / SAMPLES}


PIRATES = {"default": PirateConfig(), "bench": FULL.pirate}  # PirateConfig() (10 epochs on 20k) or the bench's (6)


def run_trial(ctx: BenchContext, name: str, queries: int, pirate_kind: str = "default",
              pirate_seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    config, start = TRIALS[name]
    bundle = ctx.dataset(DATASET)
    key = WatermarkKey.for_dataset(DATASET, seed=ctx.seed)
    clean_ckpt, clean_record = ctx.trained_model(ARCH, DATASET, FULL.clean)
    clean = clean_ckpt.model.eval()
    if start == "clean":
        victim = copy.deepcopy(clean)
        reference = None
    else:
        seed_everything(ctx.seed)
        info = bundle.info
        victim = build_model(ARCH, in_channels=info.in_channels, image_size=info.image_size, num_classes=info.num_classes,
                             normalization=info.normalization)
        reference = clean_record["val_accuracy"]
    t0 = time.perf_counter()
    embed = embed_watermark(victim, bundle.train, key, val=bundle.val, config=config, reference_accuracy=reference,
                            progress=False)
    embed_seconds = time.perf_counter() - t0
    victim.eval()
    t0 = time.perf_counter()
    pirates = []
    for seed in pirate_seeds:
        transcript = build_attack("distillation", budget=queries, seed=seed).collect(
            ModelOracle(victim, client_id="sweep"), QueryPool(bundle.attacker.x, "attacker"))
        pirate = train_pirate(transcript.x, transcript.answers, replace(PIRATES[pirate_kind], seed=seed))
        pirates.append(_rates(pirate, bundle.val, key))
    mean = {k: sum(p[k] for p in pirates) / len(pirates) for k in pirates[0]}
    return {"trial": name, "start": start, "config": asdict(config), "queries": queries, "pirate_kind": pirate_kind,
            "clean": _rates(clean, bundle.val, key), "victim": _rates(victim, bundle.val, key),
            "pirate": mean, "pirates": pirates, "embed_seconds": round(embed_seconds, 1),
            "pirate_seconds": round(time.perf_counter() - t0, 1), "best_epoch": embed.best_epoch,
            "history": embed.history}


def table(results: list[dict[str, Any]]) -> str:
    def pct(v: float) -> str:
        return f"{100 * v:.1f}"
    rows = [[r["trial"], pct(r["victim"]["accuracy"]), f"{100 * (r['victim']['accuracy'] - r['clean']['accuracy']):+.1f}",
             pct(r["victim"]["wsr"]), pct(r["victim"]["wfpr"]), pct(r["pirate"]["accuracy"]), pct(r["pirate"]["wsr"]),
             pct(r["pirate"]["wfpr"]), f"{r['best_epoch']}/{r['config']['epochs']}", f"{r['embed_seconds']:.0f}"]
            for r in results]
    return markdown_table(["trial", "victim val acc %", "vs clean", "victim WSR %", "victim WFPR %", "pirate val acc %",
                           "pirate WSR %", "pirate WFPR %", "epoch kept", "embed s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", nargs="*", default=list(TRIALS))
    parser.add_argument("--queries", type=int, default=5000, help="distillation queries (validation-scale trial)")
    parser.add_argument("--pirate", choices=sorted(PIRATES), default="default",
                        help="pirate training: PirateConfig() (default) or the bench's shorter run")
    parser.add_argument("--pirate-seeds", type=int, default=1, help="pirates per trial (seeds 0..n-1; the table shows the mean)")
    parser.add_argument("--table", action="store_true", help="only print the table of the cached trials")
    args = parser.parse_args()
    ctx = BenchContext("watermark", progress=False)
    out = Path("bench/cache/watermark-sweep")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with ctx.torch_threads(1):
        for name in args.trials:
            suffix = "" if (args.pirate, args.pirate_seeds) == ("default", 1) else f"-{args.pirate}-x{args.pirate_seeds}"
            path = out / f"{name}-q{args.queries}{suffix}.json"
            if path.exists():
                results.append(json.loads(path.read_text()))
                continue
            if args.table:
                continue
            r = run_trial(ctx, name, args.queries, args.pirate, tuple(range(args.pirate_seeds)))
            path.write_text(json.dumps(r, indent=1))
            results.append(r)
            print(table([r]).splitlines()[-1], flush=True)
    if results:
        print(f"clean LeNet-5 (val): accuracy {100 * results[0]['clean']['accuracy']:.1f}%, WSR "
              f"{100 * results[0]['clean']['wsr']:.1f}%, WFPR {100 * results[0]['clean']['wfpr']:.1f}%")
        print(table(results))


if __name__ == "__main__":
    main()
