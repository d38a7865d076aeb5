"""Development sweep behind the README's AuthNet "distillation" figures (not part of ``modelshield bench auth``).

Embeds AuthNet into the bench's victim (Fashion-MNIST by default, ``--dataset mnist``) with a base config (the
earlier recipe, or the bench's with ``--from-bench-config``) plus overrides, and scores the *validation* split
only (the test split is left to the bench, so configurations are not tuned on it). One JSON line per run:
kept epoch, with key / no key / decoy keys per epoch, three random keys, optionally keys generated
independently (``--independent-keys``), CPU seconds.

Usage (one thread, about 6 minutes a run on the reference machine; the victim is the bench's, trained first
if ``bench/cache/models`` lacks it)::

    .venv/bin/python bench/dev/auth_val_sweep.py --data-root ../shared/datasets '{"distill": 0.5}' '{"tail_lr": 0.0003}'
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from modelshield.auth import AuthKey, embed
from modelshield.auth.evaluation import accuracy_with_key
from modelshield.bench.auth_suite import CONFIGS, independent_key
from modelshield.bench.harness import BenchContext
from modelshield.bench.train_suite import victim
from modelshield.data import load_dataset
from modelshield.training import evaluate

EARLIER_RECIPE = {"tail_epochs": 10, "decoy_ratio": 1.0, "distill": 0.0}  # the defaults before the sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="+", help="JSON objects of AuthConfig fields, one run each")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--dataset", default="fashion-mnist", choices=sorted(CONFIGS))
    parser.add_argument("--independent-keys", type=int, default=0,
                        help="also score this many keys generated independently (other seeds than the bench's) on the validation split")
    parser.add_argument("--from-bench-config", action="store_true", help="start from the current bench config, not the earlier recipe (10 tail epochs, decoy ratio 1, no distillation)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_dataset(args.dataset, args.data_root)
    checkpoint, _ = victim(BenchContext("auth", data_root=args.data_root, progress=False), args.dataset)  # the bench's victim (trained if absent)
    base = CONFIGS[args.dataset] if args.from_bench_config else replace(CONFIGS[args.dataset], **EARLIER_RECIPE)
    clean_val = evaluate(checkpoint.model, bundle.val).accuracy
    for text in args.overrides:
        config = replace(base, seed=0, **json.loads(text))
        start = time.process_time()
        result = embed(checkpoint.model, bundle.train, bundle.val, config=config, progress=False)
        cpu = time.process_time() - start
        gen = torch.Generator().manual_seed(123)
        randoms = [accuracy_with_key(result.model, AuthKey.random(result.key.input_shape, result.key.normalization, generator=gen), bundle.val)
                   for _ in range(3)]
        independent = [accuracy_with_key(result.model, independent_key(result.model, result.key, bundle.train, config, bit_seed=50_000 + i,
                                                                       data_seed=60_000 + i, key_seed=70_000 + i), bundle.val)
                       for i in range(args.independent_keys)]  # seeds the bench does not use
        print(json.dumps({"overrides": json.loads(text), "clean_val": clean_val, "cpu_seconds": round(cpu, 1),
                          "kept_epoch": result.best_epoch, "val_legit": result.val_legit, "val_unauthorized": result.val_unauthorized,
                          "epochs": [[h["epoch"], h["val_legit"], h["val_unauthorized"], h.get("val_decoy")] for h in result.history],
                          "val_random_keys": randoms,
                          "val_independent_keys": independent}), flush=True)


if __name__ == "__main__":
    main()
