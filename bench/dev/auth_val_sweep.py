"""Development sweep behind the README's AuthNet defaults (not part of ``modelshield bench auth``).

Scores the *validation* split only (the test split is left to the bench, so nothing is tuned on it), on a
bench victim (``--victim``, a key of ``modelshield.bench.train_suite.VICTIMS``; ``--quick`` for the quick
victims). Two modes:

* runs: embed with ``AuthConfig()`` (the library defaults, zoo gate) plus each JSON object of overrides
  (``{"gate": "body.pool2"}``, ``{"decoy_keys": 6}``, ``{"key": {"epochs": 8}}``); one JSON line per run: kept
  epoch, with key / no key / decoy keys per epoch, ``--random-keys`` random keys (3), ``--independent-keys`` keys generated
  independently (other seeds than the bench's), CPU seconds.
* ``--auto``: the ``gate="auto"`` trials as a user gets them (``--all-candidates``: every affordable candidate),
  one JSON line per trial; the zoo defaults in ``auth/gate.py`` come from these tables and the runs above.

Usage (one thread)::

    .venv/bin/python bench/dev/auth_val_sweep.py --data-root ../shared/datasets --victim mnist --independent-keys 10 '{}'
    .venv/bin/python bench/dev/auth_val_sweep.py --data-root ../shared/datasets --victim resnet20-fashion-mnist --quick --auto
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import replace

import torch

from modelshield.attacks.removal import prune_global_magnitude
from modelshield.auth import AuthConfig, choose_gate, embed, evaluate_auth, independent_key
from modelshield.auth.evaluation import accuracy_with_key
from modelshield.bench.harness import BenchContext
from modelshield.bench.train_suite import VICTIMS, victim, victim_dataset
from modelshield.data import load_dataset
from modelshield.training import evaluate

PRUNE = 0.3  # the bench's pruning criterion: global magnitude pruning of 30% of the conv/linear weights
SWEEP_SEED = 7_000_000  # independent keys here use seeds from SWEEP_SEED on; the bench uses other seeds


def _config(overrides: dict) -> AuthConfig:  # type: ignore[type-arg]
    key = overrides.pop("key", None)
    auto = overrides.pop("auto", None)
    config = replace(AuthConfig(), **{"seed": 0, **overrides})  # seed 0 unless the run names one
    if key:
        config = replace(config, key=replace(config.key, **key))
    if auto:
        config = replace(config, auto=replace(config.auto, **auto))
    return config


def _prune_parts(result, pruned: torch.nn.Module, val) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """Where the pruning damage is: the pruned weights' share in the head and the tail, and the accuracy with the
    key when only the head's (only the tail's) pruned weights are applied."""
    tail = {id(p) for p in result.split.tail_parameters(result.model)}
    out = {}
    for part in ("head", "tail"):
        mixed = copy.deepcopy(result.model)
        zeros = total = 0
        for p_orig, p_mixed, p_pruned in zip(result.model.parameters(), mixed.parameters(), pruned.parameters()):
            if (part == "tail") == (id(p_orig) in tail) and p_mixed.dim() > 1:  # conv/linear weights of that part
                with torch.no_grad():
                    p_mixed.copy_(p_pruned)
                zeros += int((p_pruned == 0).sum())
                total += p_pruned.numel()
        out[f"val_prune_{part}_only_legit"] = accuracy_with_key(mixed, result.key, val)
        out[f"prune_{part}_sparsity"] = zeros / max(total, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="JSON objects of AuthConfig fields, one run each")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--victim", default="fashion-mnist", choices=sorted(VICTIMS))
    parser.add_argument("--quick", action="store_true", help="the quick victim (2 epochs on 10,000 images)")
    parser.add_argument("--independent-keys", type=int, default=0,
                        help="also score this many keys generated independently on the validation split")
    parser.add_argument("--random-keys", type=int, default=3, help="uniformly random keys scored per run (default 3)")
    parser.add_argument("--auto", action="store_true", help="print the gate=auto trial table (AutoGateConfig() as a user gets it)")
    parser.add_argument("--all-candidates", action="store_true", help="with --auto: every affordable candidate, not the deepest 4")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_dataset(victim_dataset(args.victim), args.data_root)
    ctx = BenchContext("auth", data_root=args.data_root, progress=False, quick=args.quick)
    checkpoint, _ = victim(ctx, args.victim)  # the bench's victim (trained if absent)
    clean_val = evaluate(checkpoint.model, bundle.val).accuracy
    clean_prune = evaluate(prune_global_magnitude(checkpoint.model, PRUNE), bundle.val).accuracy
    print(json.dumps({"victim": args.victim, "quick": args.quick, "clean_val": clean_val,
                      f"clean_val_prune{PRUNE:.1f}": clean_prune}), flush=True)
    if args.auto:
        config = replace(_config(json.loads(args.overrides[0]) if args.overrides else {}), gate="auto")
        if args.all_candidates:
            config = replace(config, auto=replace(config.auto, max_candidates=64))
        start = time.process_time()
        choice = choose_gate(checkpoint.model, bundle.train, bundle.val, config, progress=False)
        for trial in choice.trials:
            print(json.dumps({"trial": trial.to_dict(), "worst": trial.worst}), flush=True)
        print(json.dumps({"chosen": choice.gate, "candidates": list(choice.candidates), "auto": config.auto.__dict__,
                          "cpu_seconds": round(time.process_time() - start, 1)}), flush=True)
        return
    for text in args.overrides:
        config = _config(json.loads(text))
        start = time.process_time()
        result = embed(checkpoint.model, bundle.train, bundle.val, config=config, progress=False)
        cpu = time.process_time() - start
        randoms = evaluate_auth(result.model, result.key, bundle.val, random_keys=args.random_keys, seed=123).random_keys
        independent = [accuracy_with_key(result.model, independent_key(result.model, result.key, bundle.train, config,
                                                                       seed=SWEEP_SEED + i), bundle.val)
                       for i in range(args.independent_keys)]
        pruned = prune_global_magnitude(result.model, PRUNE)
        prune_legit, prune_unauthorized = accuracy_with_key(pruned, result.key, bundle.val), evaluate(pruned, bundle.val).accuracy
        prune_parts = _prune_parts(result, pruned, bundle.val)
        print(json.dumps({"overrides": json.loads(text), "gate": result.split.gate, "clean_val": clean_val,
                          "val_prune_legit": prune_legit, "val_prune_unauthorized": prune_unauthorized, **prune_parts,
                          "cpu_seconds": round(cpu, 1), "kept_epoch": result.best_epoch, "val_legit": result.val_legit,
                          "val_unauthorized": result.val_unauthorized,
                          "epochs": [[h["epoch"], h["val_legit"], h["val_unauthorized"], h.get("val_decoy")] for h in result.history],
                          "val_random_keys": randoms, "val_random_mean": statistics.fmean(randoms) if randoms else None, "val_independent_keys": independent,
                          "independent_worst": max(independent, default=None),
                          "independent_mean": statistics.fmean(independent) if independent else None}), flush=True)


if __name__ == "__main__":
    main()
