"""Suite ``watermark``: MEA-Defender on Fashion-MNIST (T-shirt + Trouser -> Pullover) and MNIST (0 + 1 -> 2).

Per dataset, all models are LeNet-5 unless said otherwise (the bench's small VGG is too slow on 2 shared CPU
cores for the 20+ trainings and extractions a dataset needs; it appears as an *other architecture*):

* the clean model (the harness's ``trained_model``: 12 epochs, Adam 1e-3, cosine; on MNIST this is the
  ``train`` suite's LeNet-5, shared through ``bench/cache/models``);
* the watermarked victim: the clean model fine-tuned with the watermark (:class:`WatermarkConfig` defaults,
  chosen by the validation sweep ``bench/dev/watermark_sweep.py``), default top-bottom key; plus a victim with
  the paper's left-right key and its KnockoffNets pirate;
* pirates of the victim, 20k queries from the ``attacker`` split: distillation (T = 4), KnockoffNets and JBDA
  (soft labels), KnockoffNets with hard labels, and KnockoffNets with a small-VGG pirate; the LeNet-5 pirates
  are trained as the extraction suite trains its pirates (:class:`PirateConfig` defaults, about 1,500 optimiser
  steps: 10 epochs on 20k answers), the small-VGG pirate for about 800 steps (6 epochs; affordability);
* removal on the soft KnockoffNets pirate with the thief's labelled ``attacker`` images: fine-tuning with 10%
  of the training-set size (the project's thief procedure, :func:`modelshield.attacks.finetune.finetune`),
  50% and 80% global magnitude pruning, fine-pruning (10%), trigger inversion + unlearning (5%, Neural
  Cleanse scan of every class);
* calibration null models (validation only): two clean LeNet-5 (seeds 101, 102; 6 epochs) and two pirates of
  the clean model (KnockoffNets seed 101, distillation seed 102), their WSR measured on composites of the
  ``val`` split; ``r0`` = the max one-sided 95% Clopper-Pearson bound (:func:`calibrate_null`);
* independent models reported (different models from the calibration ones): clean LeNet-5 seeds 1-4 (6
  epochs), a clean small VGG (4 epochs on 10,000 images), and five pirates of the clean model (the same five
  attacks as against the victim);
* every suspect is verified on 1,000 fresh composites and 1,000 evasion mixes of the ``test`` split;
  verdict = one-sided binomial test at ``alpha = 0.001`` against ``r0`` and WSR - WFPR >= 30 points
  (:class:`VerifyConfig`);
* training cost: the same start (the clean model) trained a few epochs clean, with the watermark, and clean
  again, back to back in one cell, with the same loop; the recipe's cost is clean training plus the
  embedding's epochs at that per-epoch ratio, over clean training.

Nothing here was tuned on the test split; every default is documented where it is defined. ``--quick`` is a
pipeline check only (Fashion-MNIST, 8,000 training images, 3 epochs, 4k queries, fewer models).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Callable

from torch import nn

from modelshield.attacks.extraction import PirateConfig, QueryPool, build_attack, score_pirate, train_pirate
from modelshield.attacks.finetune import QUICK_THIEF, ThiefConfig, finetune, thief_data
from modelshield.attacks.removal import (
    FinePruningConfig,
    TriggerInversionConfig,
    fine_prune,
    prune_global_magnitude,
    remove_by_trigger_inversion,
)
from modelshield.bench.harness import BenchContext, Criterion, SuiteReport, _safe, markdown_table, percent
from modelshield.data import DatasetBundle, TensorData
from modelshield.models import CheckpointMeta, build_model, load_checkpoint, save_checkpoint
from modelshield.defense import ClientPolicy, NoDefense, ProtectedModel
from modelshield.oracle import ModelOracle
from modelshield.training import TrainConfig, evaluate, seed_everything, train_model
from modelshield.watermark import (
    NullCalibration,
    VerifyConfig,
    WatermarkConfig,
    WatermarkKey,
    calibrate_null,
    count_target,
    decide,
    embed_watermark,
)

__all__ = ["run"]

THREADS = 1  # one torch thread: see the extraction suite (2 OpenMP threads on a shared 2-core machine spin)
ARCH, OTHER_ARCH = "lenet5", "vgg"


@dataclass(frozen=True)
class _Plan:
    datasets: tuple[str, ...]
    clean: TrainConfig
    train_size: int | None
    embed: WatermarkConfig
    null_clean: TrainConfig
    other_clean: TrainConfig
    other_train_size: int
    budget: int
    pirate: PirateConfig  # pirates of the victim's architecture
    other_pirate: PirateConfig  # pirates of the other architecture
    verify: VerifyConfig
    calibration_clean_seeds: tuple[int, ...]
    calibration_pirates: tuple[tuple[str, int], ...]
    independent_clean_seeds: tuple[int, ...]
    attacks: tuple[tuple[str, str, str], ...]  # (attack, labels, pirate architecture)
    finetune_fraction: float
    finetune: ThiefConfig
    trigger_fraction: float
    trigger: TriggerInversionConfig
    timing_epochs: int
    orientation_check: bool


# 12 epochs, Adam 1e-3, cosine: the train suite's LeNet-5 recipe (so the MNIST clean model is shared with it)
FULL = _Plan(
    datasets=("fashion-mnist", "mnist"), clean=TrainConfig(epochs=12, batch_size=128, lr=1e-3, schedule="cosine"),
    train_size=None, embed=WatermarkConfig(),
    # independent and calibration LeNet-5s: 6 epochs, half the clean model's (affordability on 2 shared cores)
    null_clean=TrainConfig(epochs=6, batch_size=128, lr=1e-3, schedule="cosine"),
    other_clean=TrainConfig(epochs=4, batch_size=128, lr=1e-3, schedule="cosine"),
    # LeNet-5 pirates: PirateConfig() as in the extraction suite (about 1,500 optimiser steps, 10 epochs on 20k
    # answers; a pirate trained 6 epochs was less faithful to the victim and carried about half the watermark in the
    # validation sweep); the small-VGG pirate: about 800 steps, 6 epochs (affordability on 2 cores)
    other_train_size=10_000, budget=20_000, pirate=PirateConfig(), other_pirate=PirateConfig(target_steps=800, min_epochs=5),
    verify=VerifyConfig(),
    calibration_clean_seeds=(101, 102), calibration_pirates=(("knockoff", 101), ("distillation", 102)),
    independent_clean_seeds=(1, 2, 3, 4),
    attacks=(("distillation", "soft", ARCH), ("knockoff", "soft", ARCH), ("jbda", "soft", ARCH),
             ("knockoff", "hard", ARCH), ("knockoff", "soft", OTHER_ARCH)),
    # the thief's fine-tuning: the project's one procedure and budget (attacks.finetune.ThiefConfig)
    finetune_fraction=0.10, finetune=ThiefConfig(),
    trigger_fraction=0.05, trigger=TriggerInversionConfig(), timing_epochs=2, orientation_check=True,
)
QUICK = replace(
    FULL, datasets=("fashion-mnist",), clean=TrainConfig(epochs=3, batch_size=128, lr=2e-3, schedule="cosine"),
    train_size=8_000, embed=WatermarkConfig(epochs=2), null_clean=TrainConfig(epochs=3, batch_size=128, lr=2e-3), other_clean=TrainConfig(epochs=1, batch_size=128, lr=1e-3),
    other_train_size=2_000, budget=4_000, pirate=PirateConfig(min_epochs=3, max_epochs=3),
    other_pirate=PirateConfig(min_epochs=3, max_epochs=3),
    calibration_clean_seeds=(101,), calibration_pirates=(("knockoff", 101),), independent_clean_seeds=(1,),
    attacks=(("distillation", "soft", ARCH), ("knockoff", "soft", ARCH), ("jbda", "soft", ARCH)),
    finetune=QUICK_THIEF, trigger=TriggerInversionConfig(steps=30),
    timing_epochs=1, orientation_check=False,
)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


class _Models:
    """Models cached as safetensors beside their cell (so removal attacks can reuse a pirate)."""

    def __init__(self, ctx: BenchContext, dataset: str, bundle: DatasetBundle) -> None:
        self.ctx, self.dataset, self.bundle = ctx, dataset, bundle

    def get(self, name: str, build: Callable[[], tuple[nn.Module, str, dict[str, Any]]]) -> tuple[nn.Module, dict[str, Any]]:
        """``build() -> (model, architecture, record)``; cached under ``name`` (recomputed if the weights are gone)."""
        path = self.ctx.cache_dir / f"{_safe(name)}.safetensors"
        box: dict[str, nn.Module] = {}

        def compute() -> dict[str, Any]:
            start = time.perf_counter()
            model, arch, record = build()
            info = self.bundle.info
            record = {**record, "architecture": arch, "test_accuracy": evaluate(model, self.bundle.test).accuracy,
                      "seconds": round(time.perf_counter() - start, 1)}
            save_checkpoint(path, model, CheckpointMeta.for_model(arch, in_channels=info.in_channels, image_size=info.image_size,
                                                                  num_classes=info.num_classes, dataset=self.dataset,
                                                                  normalization=info.normalization, accuracy=record["test_accuracy"]))
            box["model"] = model
            return record

        record = _cell(self.ctx, name, compute, reuse_if=lambda _r: path.exists())
        return box.get("model") or load_checkpoint(path).model.eval(), record


def _cell(ctx: BenchContext, name: str, fn: Callable[[], Any], *, reuse_if: Callable[[Any], bool] | None = None) -> Any:
    """A harness cell; every setting a cell depends on is hashed into its name (``tag`` digests)."""
    return ctx.cell(name, fn, config={"cell": name}, reuse_if=reuse_if)


def _pirate(plan: _Plan, bundle: DatasetBundle, victim: nn.Module, attack: str, labels: str, arch: str,
            seed: int) -> tuple[nn.Module, str, dict[str, Any]]:
    oracle = ModelOracle(ProtectedModel(victim, NoDefense(), max_batch=256), client_id=f"thief-{attack}",
                         policy=ClientPolicy(output="label" if labels == "hard" else "probabilities", budget=plan.budget))
    pool = QueryPool(bundle.attacker.x, "attacker")
    t0 = time.perf_counter()
    transcript = build_attack(attack, budget=plan.budget, seed=seed).collect(oracle, pool)
    query_seconds = time.perf_counter() - t0
    config = plan.pirate if arch == ARCH else plan.other_pirate
    model = train_pirate(transcript.x, transcript.answers, replace(config, architecture=arch, seed=seed))
    score = score_pirate(model, bundle.test, victim)
    return model, arch, {"attack": attack, "labels": labels, "queries": len(transcript), "fidelity": score.fidelity,
                         "query_seconds": round(query_seconds, 1)}


def _clean(plan: _Plan, bundle: DatasetBundle, arch: str, config: TrainConfig, seed: int,
           train_size: int | None) -> tuple[nn.Module, str, dict[str, Any]]:
    seed_everything(seed)
    info = bundle.info
    model = build_model(arch, in_channels=info.in_channels, image_size=info.image_size, num_classes=info.num_classes,
                        normalization=info.normalization)
    train = bundle.train if train_size is None else bundle.train.subset(train_size, seed)
    result = train_model(model, train, val=bundle.val, config=replace(config, seed=seed), progress=False)
    return model, arch, {"train_seconds": round(result.wall_seconds, 1), "train_images": len(train)}


def _timing(plan: _Plan, bundle: DatasetBundle, key: WatermarkKey, clean: nn.Module) -> dict[str, Any]:
    """Clean, watermark, clean: the same start (the clean model), data and loop, back to back, ``timing_epochs``
    each; then the whole recipe's cost: clean training plus the embedding's fine-tuning, over clean training."""
    train = bundle.train if plan.train_size is None else bundle.train.subset(plan.train_size, 0)
    clean_cfg = replace(plan.clean, epochs=plan.timing_epochs)
    times = {}
    t = time.perf_counter()
    train_model(copy.deepcopy(clean), train, val=bundle.val, config=clean_cfg, progress=False)
    times["clean_1"] = time.perf_counter() - t
    t = time.perf_counter()
    embed_watermark(copy.deepcopy(clean), train, key, val=bundle.val, config=replace(plan.embed, epochs=plan.timing_epochs),
                    progress=False)
    times["watermark"] = time.perf_counter() - t
    t = time.perf_counter()
    train_model(copy.deepcopy(clean), train, val=bundle.val, config=clean_cfg, progress=False)
    times["clean_2"] = time.perf_counter() - t
    per_epoch = times["watermark"] / ((times["clean_1"] + times["clean_2"]) / 2)
    recipe = 1.0 + per_epoch * plan.embed.epochs / plan.clean.epochs
    return {"epochs": plan.timing_epochs, "seconds": times, "per_epoch_ratio": per_epoch, "ratio": recipe,
            "clean_epochs": plan.clean.epochs, "embed_epochs": plan.embed.epochs}


def _verify_cell(ctx: BenchContext, name: str, model: nn.Module, images: TensorData, key: WatermarkKey,
                 config: VerifyConfig) -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        hits = count_target(model, images, key, samples=config.samples, seed=config.seed)
        ev = count_target(model, images, key, samples=config.evasion_samples, seed=config.seed + 1, evasion=True)
        return {"hits": hits, "samples": config.samples, "evasion_hits": ev, "evasion_samples": config.evasion_samples}
    return _cell(ctx, f"{name}/verify-{_digest(asdict(config), key.to_dict())}", compute)


def _decide(v: dict[str, Any], null: NullCalibration, config: VerifyConfig) -> dict[str, Any]:
    p, verdict = decide(v["hits"], v["samples"], v["evasion_hits"], v["evasion_samples"], null.rate, alpha=config.alpha,
                        wfpr_margin=config.wfpr_margin)
    return {**v, "wsr": v["hits"] / v["samples"], "wfpr": v["evasion_hits"] / max(1, v["evasion_samples"]),
            "p_value": p, "verdict": verdict}


def _tuned(result: Any) -> nn.Module:
    assert result.model is not None
    return result.model


def clean_fingerprint(ctx: BenchContext, plan: _Plan, dataset: str) -> str:
    """Fingerprint of the clean model's weights (pirates of it and the calibration depend on it)."""
    return str(ctx.trained_model(ARCH, dataset, plan.clean, train_size=plan.train_size).record["fingerprint"])


def _dataset(ctx: BenchContext, plan: _Plan, dataset: str) -> dict[str, Any]:
    bundle = ctx.dataset(dataset)
    key = WatermarkKey.for_dataset(dataset, seed=ctx.seed)
    models = _Models(ctx, dataset, bundle)
    null_tag = _digest(clean_fingerprint(ctx, plan, dataset), asdict(plan.clean), plan.train_size, key.to_dict(), asdict(plan.pirate),
                       asdict(plan.other_pirate), plan.budget, asdict(plan.null_clean))  # models that do not depend on the embedding
    tag = _digest(null_tag, asdict(plan.embed))
    vcfg = plan.verify

    # clean model of the victim's architecture (the harness's cache) and the watermarked victim
    clean_ckpt, clean_record = ctx.trained_model(ARCH, dataset, plan.clean, train_size=plan.train_size)
    clean = clean_ckpt.model.eval()

    def embed(k: WatermarkKey) -> tuple[nn.Module, str, dict[str, Any]]:
        seed_everything(ctx.seed)
        model = copy.deepcopy(clean)  # the library default: fine-tune the trained clean model with the watermark
        train = bundle.train if plan.train_size is None else bundle.train.subset(plan.train_size, ctx.seed)
        r = embed_watermark(model, train, k, val=bundle.val, config=plan.embed, progress=ctx.progress)
        return model, ARCH, {"embed": r.to_dict()}

    victim, victim_record = models.get(f"{dataset}/victim-{tag}", lambda: embed(key))
    out: dict[str, Any] = {"key": {"source_classes": [key.source_a, key.source_b], "target": key.target,
                                   "orientation": key.orientation, "jitter": key.jitter, "offset": key.offset},
                           "clean": {"test_accuracy": clean_record["test_accuracy"], "train_seconds": clean_record["train_seconds"]},
                           "victim": victim_record}
    suspects: dict[str, tuple[nn.Module, dict[str, Any]]] = {"victim": (victim, victim_record)}

    # calibration null models (validation split only)
    cal = []
    for seed in plan.calibration_clean_seeds:
        m, rec = models.get(f"{dataset}/cal-clean-s{seed}-{null_tag}", lambda s=seed: _clean(plan, bundle, ARCH, plan.null_clean, s, plan.train_size))
        cal.append((f"clean LeNet-5 seed {seed}", _verify_cell(ctx, f"{dataset}/cal-clean-s{seed}-{null_tag}/val", m, bundle.val, key, vcfg)))
    for attack, seed in plan.calibration_pirates:
        m, rec = models.get(f"{dataset}/cal-{attack}-s{seed}-{null_tag}",
                            lambda a=attack, s=seed: _pirate(plan, bundle, clean, a, "soft", ARCH, s))
        cal.append((f"{attack} pirate of the clean model, seed {seed}",
                    _verify_cell(ctx, f"{dataset}/cal-{attack}-s{seed}-{null_tag}/val", m, bundle.val, key, vcfg)))
    null = calibrate_null([(n, v["hits"], v["samples"]) for n, v in cal])
    out["calibration"] = {**null.to_dict(), "split": "val"}

    # pirates of the victim
    pirates: dict[str, Any] = {}
    for attack, labels, arch in plan.attacks:
        name = f"{attack}-{labels}-{arch}"
        m, rec = models.get(f"{dataset}/wm-pirate-{name}-{tag}", lambda a=attack, lb=labels, ar=arch: _pirate(plan, bundle, victim, a, lb, ar, 0))
        suspects[f"pirate {name}"] = (m, rec)
        pirates[name] = m

    # removal attacks on the soft KnockoffNets pirate
    base_name = f"knockoff-soft-{ARCH}"
    if base_name in pirates:
        base = pirates[base_name]
        thief = thief_data(bundle.attacker, round(plan.finetune_fraction * len(bundle.train)), ctx.seed)
        few = bundle.attacker.subset(round(plan.trigger_fraction * len(bundle.train)), ctx.seed + 1)
        removals: dict[str, Callable[[], tuple[nn.Module, str, dict[str, Any]]]] = {
            "finetune-10%": lambda: (_tuned(finetune(base, thief, config=plan.finetune, seed=ctx.seed)), ARCH, {"images": len(thief)}),
            "prune-50%": lambda: (prune_global_magnitude(base, 0.5), ARCH, {}),
            "prune-80%": lambda: (prune_global_magnitude(base, 0.8), ARCH, {}),
        }

        def fp() -> tuple[nn.Module, str, dict[str, Any]]:
            r = fine_prune(base, thief, config=FinePruningConfig(finetune=plan.finetune.train_config(ctx.seed)), progress=False)
            return r.model, ARCH, {"images": len(thief), "layer": r.layer, "pruned": len(r.pruned), "channels": r.channels,
                                   "holdout_accuracy": [r.accuracy_before, r.accuracy_pruned, r.accuracy_after]}

        def ti() -> tuple[nn.Module, str, dict[str, Any]]:
            r = remove_by_trigger_inversion(base, few, config=plan.trigger, progress=False)
            return r.model, ARCH, {"images": len(few), "target_found": r.target, "anomaly_index": r.anomaly_index,
                                   "mask_l1": r.mask_l1, "trigger_success": r.trigger_success}

        removals["fine-pruning"] = fp
        removals["trigger-inversion"] = ti
        for rname, fn in removals.items():
            m, rec = models.get(f"{dataset}/removal-{rname}-{tag}-{_digest(plan.finetune.to_dict(), asdict(plan.trigger))}", fn)
            suspects[f"{base_name} + {rname}"] = (m, rec)

    # independent models (reported; different from the calibration models), verified on the test split
    independent: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
    for seed in plan.independent_clean_seeds:
        independent[f"clean LeNet-5 seed {seed}"] = models.get(
            f"{dataset}/ind-clean-s{seed}-{null_tag}", lambda s=seed: _clean(plan, bundle, ARCH, plan.null_clean, s, plan.train_size))
    independent["clean small VGG seed 1"] = models.get(
        f"{dataset}/ind-vgg-s1-{null_tag}-{_digest(asdict(plan.other_clean), plan.other_train_size)}",
        lambda: _clean(plan, bundle, OTHER_ARCH, plan.other_clean, 1, plan.other_train_size))
    for attack, labels, arch in plan.attacks:
        name = f"{attack}-{labels}-{arch}"
        independent[f"pirate {name} of the clean model"] = models.get(
            f"{dataset}/ind-pirate-{name}-{null_tag}", lambda a=attack, lb=labels, ar=arch: _pirate(plan, bundle, clean, a, lb, ar, 0))

    def table(group: dict[str, tuple[nn.Module, dict[str, Any]]], prefix: str) -> dict[str, Any]:
        rows = {}
        for name, (m, rec) in group.items():
            v = _verify_cell(ctx, f"{dataset}/{prefix}/{_safe(name)}-{tag}/test", m, bundle.test, key, vcfg)
            rows[name] = {**_decide(v, null, vcfg), "test_accuracy": rec.get("test_accuracy"),
                          "fidelity": rec.get("fidelity"), "record": {k: v for k, v in rec.items() if k != "embed"}}
        return rows

    out["suspects"] = table(suspects, "suspect")
    out["independent"] = table(independent, "independent")
    out["timing"] = _cell(ctx, f"{dataset}/timing-{tag}-e{plan.timing_epochs}", lambda: _timing(plan, bundle, key, clean))

    if plan.orientation_check:
        key_lr = replace(key, orientation="left-right")
        v_lr, rec_lr = models.get(f"{dataset}/victim-left-right-{tag}", lambda: embed(key_lr))
        p_lr, prec_lr = models.get(f"{dataset}/wm-lr-pirate-knockoff-{tag}", lambda: _pirate(plan, bundle, v_lr, "knockoff", "soft", ARCH, 0))
        c_lr = _verify_cell(ctx, f"{dataset}/lr-clean-{tag}/test", clean, bundle.test, key_lr, vcfg)
        out["left_right"] = {
            "victim": {**_decide(_verify_cell(ctx, f"{dataset}/lr-victim-{tag}/test", v_lr, bundle.test, key_lr, vcfg), null, vcfg),
                       "test_accuracy": rec_lr["test_accuracy"]},
            "knockoff_pirate": {**_decide(_verify_cell(ctx, f"{dataset}/lr-pirate-{tag}/test", p_lr, bundle.test, key_lr, vcfg), null,
                                          vcfg), "test_accuracy": prec_lr["test_accuracy"]},
            "clean_model_wsr": c_lr["hits"] / c_lr["samples"],
            "note": "p-values here use the top-bottom key's calibrated r0 (no separate calibration for this key)",
        }
    return out


def run(ctx: BenchContext) -> SuiteReport:
    """Run every dataset's grid (resumable) and build the tables."""
    plan = QUICK if ctx.quick else FULL
    with ctx.torch_threads(THREADS):
        results: dict[str, Any] = {"plan": {"datasets": list(plan.datasets), "budget": plan.budget,
                                            "verify": asdict(plan.verify), "embed": asdict(plan.embed),
                                            "pirate": asdict(plan.pirate), "other_pirate": asdict(plan.other_pirate)},
                   "quick": ctx.quick}
        criteria: list[Criterion] = []
        for dataset in plan.datasets:
            results[dataset] = _dataset(ctx, plan, dataset)
            criteria += _acceptance(dataset, results[dataset])
    note = "Quick run: a pipeline check only; the criteria are defined for the full run." if ctx.quick else ""
    return SuiteReport(results=results, markdown=_markdown(results, plan), criteria=criteria, criteria_note=note)


def _acceptance(dataset: str, r: dict[str, Any]) -> list[Criterion]:
    """The issue's acceptance rows for one dataset, as harness criteria."""
    s, ind = r["suspects"], r["independent"]
    victim = s["victim"]
    extracted = {k: v for k, v in s.items() if k.startswith("pirate ") and ("-soft-lenet5" in k)}
    ti = next((v for k, v in s.items() if k.endswith("trigger-inversion")), None)
    base = s.get("pirate knockoff-soft-lenet5")
    clean_acc, victim_acc = r["clean"]["test_accuracy"], victim["test_accuracy"]
    wfprs = [victim["wfpr"], *(v["wfpr"] for v in extracted.values())]
    ind_positive = sum(bool(v["verdict"]) for v in ind.values())
    d = f"{dataset}: "
    rows = [
        Criterion(d + "victim accuracy drop vs the clean model", 100 * (clean_acc - victim_acc), 1.0, "<=", unit="points",
                  detail=f"{100 * victim_acc:.2f}% vs {100 * clean_acc:.2f}%"),
        Criterion(d + "victim WSR", victim["wsr"], 0.98, ">=", unit="%"),
        Criterion(d + "extracted (soft, LeNet-5) WSR, the lowest", min((v["wsr"] for v in extracted.values()), default=None),
                  0.80, ">=", unit="%", detail=f"{len(extracted)} pirates"),
        Criterion(d + "extracted (soft, LeNet-5) verdicts positive", sum(bool(v["verdict"]) for v in extracted.values()),
                  len(extracted), "==", detail=f"of {len(extracted)}"),
        Criterion(d + "independent models", len(ind), 10, ">="),
        Criterion(d + "independent models judged positive", ind_positive, 0, "=="),
        Criterion(d + "WFPR (victim and extracted), the highest", max(wfprs), 0.06, "<=", unit="%"),
        Criterion(d + "trigger inversion + unlearning: WSR left", None if ti is None else ti["wsr"], 0.70, ">=", unit="%"),
        Criterion(d + "trigger inversion + unlearning: accuracy drop",
                  None if ti is None or base is None else 100 * (base["test_accuracy"] - ti["test_accuracy"]), 2.0, "<=",
                  unit="points"),
        Criterion(d + "training cost with the watermark vs clean training", r["timing"]["ratio"], 1.5, "<=", unit="x",
                  detail=f"clean training + embedding; one watermark epoch = {r['timing']['per_epoch_ratio']:.2f}x a clean epoch"),
    ]
    return rows


_pct = partial(percent, suffix="")  # the tables' headers carry the unit


def _rows(group: dict[str, Any]) -> list[list[Any]]:
    return [[name, _pct(v["test_accuracy"]), _pct(v.get("fidelity")), _pct(v["wsr"]), _pct(v["wfpr"]), f"{v['p_value']:.3g}",
             "**positive**" if v["verdict"] else "negative"] for name, v in group.items()]


def _markdown(results: dict[str, Any], plan: _Plan) -> str:
    head = ["model", "test acc %", "fidelity %", "WSR %", "WFPR %", "p-value", "verdict"]
    lines = [f"LeNet-5 victims; extraction budget {plan.budget} queries from the attacker split; verification on "
             f"{plan.verify.samples} composites and {plan.verify.evasion_samples} evasion mixes of the test split, "
             f"alpha = {plan.verify.alpha:g}; a positive verdict also needs WSR - WFPR >= {100 * plan.verify.wfpr_margin:g} points. The small VGG is used only as an other architecture (too slow on 2 shared "
             "cores for the whole grid).", ""]
    if results["quick"]:
        lines += ["**Quick run: a pipeline check only** (8,000 training images, 3 epochs, 4k queries, few models); the "
                  "acceptance criteria are defined for the full run.", ""]
    for dataset in plan.datasets:
        r = results[dataset]
        k, cal = r["key"], r["calibration"]
        emb = r["victim"].get("embed", {})
        lines += [f"## {dataset}: classes {k['source_classes'][0]} + {k['source_classes'][1]} -> {k['target']}, "
                  f"{k['orientation']} split (seam jitter {k['jitter']} px, offsets {k['offset']} px)", "",
                  f"Clean LeNet-5: {_pct(r['clean']['test_accuracy'])}% test accuracy. Watermarked victim: "
                  f"{_pct(r['victim']['test_accuracy'])}% (validation during embedding: accuracy {_pct(emb.get('clean_accuracy'))}%, "
                  f"WSR {_pct(emb.get('wsr'))}%, WFPR {_pct(emb.get('wfpr'))}%; mean MGDA weights {emb.get('mean_weights')}).", "",
                  f"Null rate r0 = {_pct(cal['rate'])}% (max one-sided {100 * cal['confidence']:g}% Clopper-Pearson bound over "
                  f"{len(cal['names'])} calibration models on the validation split: " +
                  ", ".join(f"{n} {_pct(w)}%" for n, w in zip(cal["names"], cal["wsr"])) + ").", "",
                  "### Victim, its pirates and removal attacks", "", markdown_table(head, _rows(r["suspects"])), "",
                  "### Independent models (must be negative)", "", markdown_table(head, _rows(r["independent"])), ""]
        t = r["timing"]
        lines += [f"Embedding time: a watermark epoch costs {t['per_epoch_ratio']:.2f}x a clean epoch ({t['epochs']} epochs "
                  "each from the clean model, same loop, same run: " + ", ".join(f"{n} {s:.0f} s" for n, s in t["seconds"].items())
                  + f"); the recipe (clean training, {t['clean_epochs']} epochs, then {t['embed_epochs']} epochs of embedding) "
                  f"costs {t['ratio']:.2f}x clean training alone.", ""]
        if "left_right" in r:
            lr = r["left_right"]
            lines += ["### The paper's left-right split (same recipe)", "",
                      markdown_table(["model", "test acc %", "WSR %", "WFPR %", "p-value"], [
                          ["victim (left-right key)", _pct(lr["victim"]["test_accuracy"]), _pct(lr["victim"]["wsr"]),
                           _pct(lr["victim"]["wfpr"]), f"{lr['victim']['p_value']:.3g}"],
                          ["KnockoffNets pirate", _pct(lr["knockoff_pirate"]["test_accuracy"]), _pct(lr["knockoff_pirate"]["wsr"]),
                           _pct(lr["knockoff_pirate"]["wfpr"]), f"{lr['knockoff_pirate']['p_value']:.3g}"]]),
                      "", f"Clean model WSR with the left-right key: {_pct(lr['clean_model_wsr'])}%. {lr['note']}.", ""]
    return "\n".join(lines)
