"""Development probe: how alike are the key and independently generated keys at the gate (validation images)?

Regenerates the key ``embed`` makes with ``AuthConfig(seed=SEED)`` on a bench victim (the same draws: bits, key
images, key seed; no tail training), then the independently generated keys ``auth_val_sweep.py`` scores (seeds
7,000,000 + i), and prints per key: bits shared with the key, the mean per-image cosine similarity of the two
keys' changes of the gate activations, the norms of those changes, and the share of the key's pixels both use.
Pair it with a sweep run's ``val_independent_keys`` to see which keys get in.

Usage::

    .venv/bin/python bench/dev/auth_key_similarity.py --data-root ../shared/datasets --victim fashion-mnist --seed 1 --keys 10
"""

from __future__ import annotations

import argparse
import torch
import torch.nn.functional as F

from modelshield.auth import AuthConfig, independent_key
from modelshield.auth.embedding import _draw_bits, _embed_generator, _key_config, model_normalization
from modelshield.auth.gate import default_gate, gate_output, trace_gate
from modelshield.auth.keygen import generate_key
from modelshield.bench.harness import BenchContext
from modelshield.bench.train_suite import VICTIMS, victim, victim_dataset
from modelshield.data import load_dataset

SWEEP_SEED = 7_000_000  # auth_val_sweep.py's independent keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--victim", default="fashion-mnist", choices=sorted(VICTIMS))
    parser.add_argument("--seed", type=int, default=0, help="the embedding's seed")
    parser.add_argument("--keys", type=int, default=10, help="independent keys to compare")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_dataset(victim_dataset(args.victim), args.data_root)
    model = victim(BenchContext("auth", data_root=args.data_root, progress=False), args.victim)[0].model.eval()
    config = AuthConfig(seed=args.seed).for_model(model)
    gate = default_gate(model)
    split = trace_gate(model, gate, bundle.train.x[:8])
    # the draws embed() makes before the tail (key images, bits, key seed), through embed's own helpers
    key_x, _, _, _, bits = _draw_bits(model, gate, split.channels, bundle.train.x, config, _embed_generator(args.seed))
    key = generate_key(model, gate, key_x, bits, model_normalization(model, int(key_x.shape[1])),
                       _key_config(config, args.seed)).key
    x = bundle.val.x[:512]
    with torch.no_grad():
        base = gate_output(model, gate, x)
        own = gate_output(model, gate, key.apply(x)) - base
    print(f"key bits {sorted(bits.channels)}; change norm {float(own.flatten(1).norm(dim=1).mean()):.3f}")
    for i in range(args.keys):
        other = independent_key(model, key, bundle.train, config, seed=SWEEP_SEED + i)
        with torch.no_grad():
            change = gate_output(model, gate, other.apply(x)) - base
        cosine = float(F.cosine_similarity(own.flatten(1), change.flatten(1)).mean())
        shared_pixels = float(((key.mask > 0.05) & (other.mask > 0.05)).sum() / (key.mask > 0.05).sum().clamp_min(1))
        print(f"independent key {i}: shared bits {len(set(bits.channels) & set(other.bits))}, cosine {cosine:.3f}, "
              f"change norm {float(change.flatten(1).norm(dim=1).mean()):.3f}, shared pixels {shared_pixels:.3f}", flush=True)


if __name__ == "__main__":
    main()
