"""AQuant experiment: FP vs round-to-nearest vs QDrop-style reconstruction vs AQuant borders.

`run(config)` trains a float CIFAR-style ResNet (built-in `shapes` set by default, or a user's
CIFAR-10 / ImageNet-style folder), then quantizes it with `frugal.transforms.quant.block_recon` at every
W/A setting with each method, all from the same calibration images and the same iterations per
block, and writes `aquant.json`, `aquant.md` and `aquant.png` under `config.outdir`. The papers'
ResNet-18 ImageNet numbers (AQuant, arXiv 2208.11945; QDrop, arXiv 2203.05740) are printed beside
ours as context (different model and data: compare the ordering, not the values).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from frugal.scripts.report import machine_text
from frugal.scripts.systems.aquant.config import AQuantConfig, parse_setting, setting_name
from frugal.transforms.quant.block_recon import METHODS, ReconConfig

# ResNet-18 ImageNet top-1 (%): QDrop from its repository README (github.com/wimh966/QDrop), AQuant
# from its abstract (arXiv 2208.11945). AQuant's table for the other settings is not available to us.
PAPER_RESNET18 = {
    "FP": 71.06,
    "W4A4": {"qdrop": 69.13, "aquant": None},
    "W2A4": {"qdrop": 64.38, "aquant": None},
    "W3A3": {"qdrop": 65.68, "aquant": None},
    "W2A2": {"qdrop": 51.69, "aquant": 60.31},
}
METHOD_LABELS = {"rtn": "round-to-nearest", "qdrop": "QDrop-style", "aquant": "AQuant"}

FP_TRAINING_FIELDS = (
    "dataset",
    "data_path",
    "n_train",
    "n_test",
    "validation_size",
    "image_size",
    "width",
    "fp_steps",
    "fp_batch_size",
    "fp_learning_rate",
    "max_shift",
    "seed",
)


def _fp_recipe(config: AQuantConfig, model_name: str) -> str:
    return json.dumps({"model": model_name, **{f: getattr(config, f) for f in FP_TRAINING_FIELDS}}, sort_keys=True)


def fp_cache_path(config: AQuantConfig, model_name: str) -> Path | None:
    """Where the float model of this recipe is kept (None without a cache folder)."""
    root = config.cache_root()
    if root is None:
        return None
    digest = hashlib.sha256(_fp_recipe(config, model_name).encode()).hexdigest()[:16]
    return root / "float" / f"{model_name}-{digest}.npz"


def train_or_load_float_model(config: AQuantConfig, model_name: str, data, model):
    """Trains `model` with the config's float recipe, or loads the arrays a previous run with the
    same recipe stored in the cache folder (.npz, no pickle; written atomically). Returns (model,
    train seconds, whether it came from the cache)."""
    from flax import nnx

    from frugal.scripts.harness import fit_classifier

    cache = fp_cache_path(config, model_name)
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["__recipe__"]) != _fp_recipe(config, model_name):
                raise ValueError(
                    f"{cache} holds a model trained with {stored['__recipe__']}, not this config's "
                    f"{_fp_recipe(config, model_name)}; delete the file or pass another --cache-dir"
                )
            leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))
            values = [np.asarray(stored[jax.tree_util.keystr(path)]) for path, _ in leaves]
            seconds = float(stored["__seconds__"])
        nnx.update(model, jax.tree_util.tree_unflatten(treedef, values))
        return model, seconds, True
    fit = fit_classifier(
        model,
        data,
        steps=config.fp_steps,
        batch_size=config.fp_batch_size,
        learning_rate=config.fp_learning_rate,
        max_shift=config.max_shift,
        seed=config.seed,
        progress=config.progress,
    )
    if cache is not None:
        leaves, _ = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(fit.model)))
        arrays = {jax.tree_util.keystr(path): np.asarray(v) for path, v in leaves}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f, __recipe__=np.asarray(_fp_recipe(config, model_name)), __seconds__=np.asarray(fit.seconds), **arrays
            )
        os.replace(tmp, cache)
    return fit.model, fit.seconds, False


def load_data(config: AQuantConfig):
    """(train split for the float model and calibration, held-out validation split, the dataset)."""
    from frugal.scripts.data import load_dataset, make_shapes_dataset

    if config.dataset == "shapes":
        data = make_shapes_dataset(config.n_train, config.n_test, image_size=config.image_size or 32, seed=config.seed)
    else:
        data = load_dataset(config.dataset, data_path=config.data_path, image_size=config.image_size, seed=config.seed)
    keep = len(data.train_x) - config.validation_size
    if keep < 10:
        raise ValueError(
            f"validation_size={config.validation_size} leaves {keep} of {len(data.train_x)} training images; lower it"
        )
    validation = (data.train_x[keep:], data.train_y[keep:])
    data = dataclasses.replace(data, train_x=data.train_x[:keep], train_y=data.train_y[:keep])
    return data, validation


def correct_predictions(net, images: np.ndarray, labels: np.ndarray, batch: int = 250) -> np.ndarray:
    """Per-image top-1 correctness (bool) of a callable network."""
    if len(images) == 0:
        return np.zeros(0, bool)
    preds = [np.argmax(np.asarray(net(images[i : i + batch])), axis=-1) for i in range(0, len(images), batch)]
    return np.concatenate(preds) == labels


def accuracy(net, images: np.ndarray, labels: np.ndarray, batch: int = 250) -> float:
    """Top-1 accuracy of a callable network over all images."""
    return float(np.mean(correct_predictions(net, images, labels, batch)))


def std_error(p: float, n: int) -> float:
    """Binomial standard error of an accuracy `p` measured on `n` images."""
    return float(np.sqrt(max(p * (1.0 - p), 0.0) / max(n, 1)))


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Accuracy difference ``mean(a) - mean(b)`` of two methods scored on the same images, and its
    standard error from the per-image differences (smaller than the unpaired one when both
    methods get the same images right)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def recon_config_for(
    config: AQuantConfig, w: int, a: int, method: str, granularity: str, seed: int | None = None
) -> ReconConfig:
    # Only the per-run fields change; everything else is config.recon, shared by every method.
    return dataclasses.replace(
        config.recon,
        weight_bits=w,
        act_bits=a,
        method=method,
        border_granularity=granularity,
        seed=config.seeds[0] if seed is None else seed,
    )


def calibration_subset(config: AQuantConfig, train_x: np.ndarray, seed: int) -> np.ndarray:
    """The calibration images of one seed: a seeded subset of the training images (shared by every
    method and setting of that seed)."""
    order = np.random.default_rng([config.seed, 1, seed]).permutation(len(train_x))
    return train_x[order[: config.recon.calibration_size]]


def _block_summary(log: dict) -> list[dict]:
    return [
        {
            "block": b["block"],
            "loss_rtn": b["loss_rtn"],
            "loss_reconstructed": b["loss_reconstructed"],
            "loss_final": b["loss_final"],
            "kept": b["kept"],
            "undecided_weights": b.get("undecided_weights"),
            "border_shift": b.get("border_shift"),
            "train_loss_first": b["history"][0]["recon_loss"] if b["history"] else None,
            "train_loss_last": b["history"][-1]["recon_loss"] if b["history"] else None,
            "history": b["history"],
            "seconds": b["seconds"],
            "from_cache": bool(b.get("from_cache", False)),
        }
        for b in log["blocks"]
    ]


def run(config: AQuantConfig) -> dict:
    """Trains (or restores) every float model, quantizes it every way with every seed, and returns
    (and writes) the figures."""
    from frugal.scripts import report
    from frugal.transforms.quant import block_recon

    t0 = time.perf_counter()
    before = report.machine_description()
    programs_before = block_recon.compiled_programs()
    data, validation = load_data(config)
    models = {name: _run_model(config, name, data, validation) for name in config.models}
    checks = {f"{name}: {claim}": v for name, m in models.items() for claim, v in m["checks"].items()}
    figures = {
        "config": dataclasses.asdict(config),
        "recon": dataclasses.asdict(config.recon),
        "granularity_candidates": list(config.granularity_candidates),
        "dataset": {
            "name": data.name,
            "train": len(data.train_x),
            "validation": int(len(validation[0])),
            "test": len(data.test_x),
            "image_shape": list(data.image_shape),
            "classes": data.num_classes,
        },
        "seeds": list(config.seeds),
        "models": models,
        "checks": checks,
        "compiled_programs": block_recon.compiled_programs() - programs_before,
        "block_reconstructions": sum(m["block_reconstructions"] for m in models.values()),
        "paper_resnet18_imagenet": PAPER_RESNET18,
        "machine": report.machine_record(before),
        "seconds": time.perf_counter() - t0,
    }
    outdir = Path(config.outdir)
    figures["plot"] = str(_plot(figures, outdir / "aquant.png"))
    report.write_json(outdir / "aquant.json", figures)
    (outdir / "aquant.md").write_text(markdown(figures))
    return figures


def _run_model(config: AQuantConfig, model_name: str, data, validation) -> dict:
    """One float model quantized at every setting with every method and seed."""
    from frugal.models.registry import create_image_model
    from frugal.transforms.quant import block_recon
    from frugal.transforms.quant.recon_cache import ReconCache

    val_x, val_y = validation
    kwargs = {"width": config.width} if model_name.startswith("cifar_") else {}
    model = create_image_model(
        model_name, num_classes=data.num_classes, in_channels=data.image_shape[-1], seed=config.seed, **kwargs
    )
    trained, fp_seconds, from_cache = train_or_load_float_model(config, model_name, data, model)
    trained.eval()
    root = config.cache_root()
    cache = None if root is None else ReconCache(root / "blocks")

    correct = {}  # (seed, run name) -> per-test-image correctness, for paired differences

    def evaluate(seed, name: str, net) -> dict:
        correct[seed, name] = correct_predictions(net, data.test_x, data.test_y)
        acc = float(correct[seed, name].mean())
        out = {"test": acc, "test_std_error": std_error(acc, len(data.test_x))}
        if len(val_x):
            out["validation"] = accuracy(net, val_x, val_y)
        return out

    fp = evaluate(None, "FP", block_recon.float_network(trained))
    seeds, selection, ablation = {}, {}, {}
    counts = {"reconstructed": 0}
    fixed = config.recon.border_granularity  # AQuant's border when not picked on validation
    for index, seed in enumerate(config.seeds):
        calibration = calibration_subset(config, data.train_x, seed)
        results, blocks, fallbacks = {}, {}, {}

        def quantize(run_name: str, w: int, a: int, method: str, granularity: str) -> dict:
            recon = recon_config_for(config, w, a, method, granularity, seed)
            net, log = block_recon.quantize_resnet(trained, calibration, recon, block_cache=cache)
            blocks[run_name] = _block_summary(log)
            if method != "rtn":
                counts["reconstructed"] += sum(1 for b in blocks[run_name] if not b["from_cache"])
            fallbacks[run_name] = log["fallbacks"]
            return evaluate(seed, run_name, net)

        for w, a in config.setting_pairs:
            name = setting_name(w, a)
            results[name] = {}
            for method in config.methods:
                if method != "aquant" or not config.granularity_candidates:
                    results[name][method] = quantize(f"{name}/{method}", w, a, method, fixed)
                    continue
                if index == 0:  # the granularity is picked with the first seed and kept for the others
                    tried = {g: quantize(f"{name}/aquant-{g}", w, a, method, g) for g in config.granularity_candidates}
                    best = max(config.granularity_candidates, key=lambda g: tried[g]["validation"])  # first of equals
                    selection[name] = {"selected": best, "seed": seed, "results": tried}
                    result = tried[best]
                    blocks[f"{name}/aquant"] = blocks[f"{name}/aquant-{best}"]
                    fallbacks[f"{name}/aquant"] = fallbacks[f"{name}/aquant-{best}"]
                    correct[seed, f"{name}/aquant"] = correct[seed, f"{name}/aquant-{best}"]
                else:
                    best = selection[name]["selected"]
                    result = quantize(f"{name}/aquant", w, a, method, best)
                results[name]["aquant"] = {**result, "granularity": best}
        if index == 0 and config.ablation and "aquant" in config.methods:
            w, a = parse_setting(config.ablation_setting)
            name = setting_name(w, a)
            for granularity in dict.fromkeys((fixed, *config.ablation)):  # each once
                if granularity == fixed and name in results:
                    ablation[granularity] = results[name]["aquant"]
                    continue
                ablation[granularity] = quantize(f"{name}/aquant-{granularity}", w, a, "aquant", granularity)
        differences = {}
        for name in results:
            for other in ("qdrop", "rtn"):
                if (seed, f"{name}/aquant") in correct and (seed, f"{name}/{other}") in correct:
                    diff, se = paired_difference(correct[seed, f"{name}/aquant"], correct[seed, f"{name}/{other}"])
                    differences[f"{name}: AQuant - {METHOD_LABELS[other]}"] = {
                        "points": 100 * diff,
                        "std_error": 100 * se,
                    }
        seeds[str(seed)] = {
            "accuracy": {n: {m: r["test"] for m, r in accs.items()} for n, accs in results.items()},
            "results": results,
            "differences": differences,
            "fallbacks": fallbacks,
            "blocks": blocks,
        }
    summary = _seed_summary(config, seeds)
    seed_differences = _seed_differences(config, correct, seeds)
    undecided = _undecided(seeds)
    return {
        "model": model_name,
        "width": config.width if model_name.startswith("cifar_") else None,
        "fp_accuracy": fp["test"],
        "fp": fp,
        "fp_train_seconds": fp_seconds,
        "fp_from_cache": from_cache,
        "seeds": seeds,
        "summary": summary,
        "seed_differences": seed_differences,
        "granularity_selection": selection,
        "ablation": {
            "setting": config.ablation_setting,
            "accuracy": {g: r["test"] for g, r in ablation.items()},
            "results": ablation,
        },
        "undecided_weights": undecided,
        "checks": _checks(seed_differences, seeds, undecided, fallback=config.fallback),
        "block_reconstructions": counts["reconstructed"],
    }


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _seed_summary(config: AQuantConfig, seeds: dict) -> dict:
    """Per setting and method: test top-1 (%) per seed, their mean and standard deviation."""
    out = {}
    for name in next(iter(seeds.values()))["accuracy"]:
        out[name] = {}
        for method in config.methods:
            per_seed = [100 * s["accuracy"][name][method] for s in seeds.values()]
            mean, sd = _mean_sd(per_seed)
            out[name][method] = {"per_seed": per_seed, "mean": mean, "sd": sd}
    return out


def seed_statistics(per_seed: list[float], per_image: np.ndarray | None = None) -> dict:
    """Mean and spread of a difference measured once per seed (points), and the noise it is judged by.

    ``sd``: the standard deviation over seeds (the run-to-run spread: calibration sample and
    reconstruction). ``se_seeds = sd / sqrt(n)``. ``se_test``: the standard error over test images of
    the seed-averaged per-image difference (`per_image`, one row per seed), the sampling noise of the
    fixed test set, which the seeds cannot show. ``threshold = max(sd, 2 * sqrt(se_seeds^2 +
    se_test^2))``: a difference "holds" only beyond it, i.e. beyond both its seed spread and two
    standard errors of everything that varies.
    """
    n = len(per_seed)
    mean, sd = _mean_sd(per_seed)
    se_seeds = sd / np.sqrt(n)
    se_test = 0.0
    if per_image is not None and per_image.shape[-1] > 1:
        d = np.asarray(per_image, np.float64).reshape(n, -1).mean(axis=0)
        se_test = 100 * float(d.std(ddof=1) / np.sqrt(len(d)))
    noise = float(np.hypot(se_seeds, se_test))
    return {
        "per_seed": [float(v) for v in per_seed],
        "mean": mean,
        "sd": sd,
        "se_seeds": float(se_seeds),
        "se_test": se_test,
        "threshold": max(sd, NOISE_SE * noise),
        "seeds": n,
    }


def seed_verdict(stats: dict, *, at_least: bool = False) -> str:
    """ "holds" when the seed-mean difference exceeds its threshold (`seed_statistics`), "within
    noise" when |mean| <= threshold, else "NO"; with one seed there is no spread to judge by, so a
    positive difference is "one seed: no verdict". With `at_least` (a ">=" claim) within noise holds."""
    mean, threshold = stats["mean"], stats["threshold"]
    if mean > threshold:
        return "holds" if stats["seeds"] >= 2 else "one seed: no verdict"
    if mean >= -threshold:
        return "holds" if at_least else "within noise"
    return "NO"


def _seed_differences(config: AQuantConfig, correct: dict, seeds: dict) -> dict:
    out = {}
    for name in next(iter(seeds.values()))["accuracy"]:
        for other in ("qdrop", "rtn"):
            label = f"{name}: AQuant - {METHOD_LABELS[other]}"
            if not all(label in s["differences"] for s in seeds.values()):
                continue
            per_image = np.stack(
                [
                    correct[seed, f"{name}/aquant"].astype(np.float64) - correct[seed, f"{name}/{other}"]
                    for seed in config.seeds
                ]
            )
            out[label] = seed_statistics([s["differences"][label]["points"] for s in seeds.values()], per_image)
    return out


def _undecided(seeds: dict) -> dict:
    """Per learned run (setting/method): the undecided AdaRound fraction per block, mean and max over seeds."""
    out = {}
    first = next(iter(seeds.values()))["blocks"]
    for key in first:
        if key.endswith("/rtn") or "/aquant-" in key:
            continue
        per_seed = [[b["undecided_weights"] for b in s["blocks"][key]] for s in seeds.values() if key in s["blocks"]]
        if not per_seed or any(v is None for row in per_seed for v in row):
            continue
        arr = np.asarray(per_seed, np.float64)
        out[key] = {"mean": arr.mean(axis=0).tolist(), "max": arr.max(axis=0).tolist()}
    return out


# A paired difference "holds" only beyond this many standard errors (about 95% two-sided).
NOISE_SE = 2.0
# The undecided share of AdaRound variables a settled reconstruction stays below, per block.
SETTLED_UNDECIDED = 0.05


def verdict(points: float, std_error: float, *, at_least: bool = False) -> str:
    """ "holds" when one run's difference clears its noise, "within noise" when |diff| <= NOISE_SE x SE,
    else "NO". With `at_least` (a ">=" claim), a difference within noise also holds."""
    if points > NOISE_SE * std_error:
        return "holds"
    if points >= -NOISE_SE * std_error:
        return "holds" if at_least else "within noise"
    return "NO"


def _checks(seed_differences: dict, seeds: dict, undecided: dict, *, fallback: bool) -> dict:
    """The claims, judged at the seed level (see `seed_statistics`)."""
    checks = {}
    for label, stats in seed_differences.items():
        name, other = label.split(": AQuant - ")
        at_least = other == METHOD_LABELS["rtn"]
        claim = "AQuant >= round-to-nearest" if at_least else "AQuant > QDrop-style"
        text = f"{name}: {claim} over {stats['seeds']} seeds ({stats['mean']:+.2f}, spread {stats['sd']:.2f}, "
        text += f"threshold {stats['threshold']:.2f})"
        checks[text] = seed_verdict(stats, at_least=at_least)
    reconstructed = [
        b for s in seeds.values() for key, bs in s["blocks"].items() if not key.endswith("/rtn") for b in bs
    ]
    # With the fallback on, a block that ends worse than round-to-nearest is replaced by it, so
    # "final error <= round-to-nearest's" would hold by construction: only the optimization itself
    # (the hard-rounded error before any fallback) is checked.
    checks["every block: reconstruction error decreased during optimization"] = (
        "holds" if all(b["loss_reconstructed"] < b["loss_rtn"] for b in reconstructed) else "NO"
    )
    if not fallback:
        checks["every block: final calibration error <= round-to-nearest's"] = (
            "holds" if all(b["loss_final"] <= b["loss_rtn"] for b in reconstructed) else "NO"
        )
    worst = max((v for u in undecided.values() for v in u["max"]), default=None)
    if worst is not None:
        checks[f"every block: AdaRound variables settled (undecided < {SETTLED_UNDECIDED:.0%}; worst {worst:.1%})"] = (
            "holds" if worst < SETTLED_UNDECIDED else "NO"
        )
    return checks


def tables(figures: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, rows) for the console and the Markdown report."""
    methods = [m for m in METHODS if m in figures["config"]["methods"]]
    n_test = figures["dataset"]["test"]
    seeds = figures["seeds"]
    out = []
    rows = []
    for model_name, m in figures["models"].items():
        for name, per_method in m["summary"].items():
            paper = PAPER_RESNET18.get(name, {})
            rows.append(
                [model_name, name, f"{100 * m['fp_accuracy']:.2f}"]
                + [_mean_sd_cell(per_method[method]) for method in methods]
                + [_seed_diff_cell(m, name, "qdrop"), _seed_diff_cell(m, name, "rtn")]
                + [_paper(paper.get("qdrop")), _paper(paper.get("aquant"))]
            )
    se = 100 * std_error(0.5, n_test)
    out.append(
        (
            f"Top-1 % on {figures['dataset']['name']} test ({n_test} images, binomial std error <= {se:.2f}), "
            f"mean ± standard deviation over {len(seeds)} seeds (calibration subset and reconstruction); first/last "
            f"{figures['recon']['first_last_bits']}-bit; AQuant - X: seed-mean paired difference, ± its threshold "
            "(max of the seed spread and 2 standard errors); paper columns: ResNet-18 ImageNet",
            ["model", "setting", "FP"]
            + [METHOD_LABELS[m] for m in methods]
            + ["AQuant - QDrop", "AQuant - RTN", "paper R18 QDrop", "paper R18 AQuant"],
            rows,
        )
    )
    seed_rows = []
    for model_name, m in figures["models"].items():
        for seed, s in m["seeds"].items():
            for name, accs in s["accuracy"].items():
                d = s["differences"].get(f"{name}: AQuant - QDrop-style")
                seed_rows.append(
                    [model_name, seed, name]
                    + [f"{100 * accs[method]:.2f}" for method in methods]
                    + ["-" if d is None else f"{d['points']:+.2f} ± {d['std_error']:.2f}"]
                )
    out.append(
        (
            "Per seed: test top-1 % and AQuant - QDrop-style paired over the test images (± one standard error)",
            ["model", "seed", "setting"] + [METHOD_LABELS[m] for m in methods] + ["AQuant - QDrop"],
            seed_rows,
        )
    )
    selection_rows = []
    candidates = figures["granularity_candidates"]
    for model_name, m in figures["models"].items():
        for name, sel in m["granularity_selection"].items():
            selection_rows.append(
                [model_name, name]
                + [
                    ("* " if g == sel["selected"] else "")
                    + f"{100 * sel['results'][g]['validation']:.2f} / {100 * sel['results'][g]['test']:.2f}"
                    for g in candidates
                ]
            )
    if selection_rows:
        out.append(
            (
                f"AQuant border granularity per setting, picked on the validation images with seed {seeds[0]} and "
                "kept for the other seeds (validation / test top-1 %; * = picked)",
                ["model", "setting"] + list(candidates),
                selection_rows,
            )
        )
    for model_name, m in figures["models"].items():
        if m["ablation"]["accuracy"]:
            out.append(
                (
                    f"{model_name}: AQuant border granularity ablation at {m['ablation']['setting']} "
                    f"(seed {seeds[0]}, test top-1 %)",
                    ["granularity", "top-1 %", "std error"],
                    [
                        [g, f"{100 * r['test']:.2f}", f"{100 * r['test_std_error']:.2f}"]
                        for g, r in m["ablation"]["results"].items()
                    ],
                )
            )
    undecided_rows = []
    nblocks = 0
    for model_name, m in figures["models"].items():
        for key, u in m["undecided_weights"].items():
            nblocks = max(nblocks, len(u["mean"]))
            undecided_rows.append(
                [model_name, key] + [f"{100 * a:.1f} / {100 * b:.1f}" for a, b in zip(u["mean"], u["max"])]
            )
    if undecided_rows:
        out.append(
            (
                f"Undecided AdaRound variables per block after {figures['recon']['iterations']} iterations "
                f"(% with h(v) in (0.05, 0.95), mean / max over seeds; settled: < {SETTLED_UNDECIDED:.0%})",
                ["model", "run"] + [f"block {i + 1}" for i in range(nblocks)],
                [row + [""] * (nblocks + 2 - len(row)) for row in undecided_rows],
            )
        )
    block_rows = []
    for model_name, m in figures["models"].items():
        first = m["seeds"][str(seeds[0])]
        for key, bs in first["blocks"].items():
            if key.endswith("/rtn") or "/aquant-" in key:
                continue
            block_rows.append(
                [model_name, key]
                + [
                    f"{b['loss_rtn']:.4g} -> {b['loss_reconstructed']:.4g}" + ("" if b["kept"] else " (kept RTN)")
                    for b in bs
                ]
            )
    n_fallback = sum(
        v
        for m in figures["models"].values()
        for s in m["seeds"].values()
        for key, v in s["fallbacks"].items()
        if "/aquant-" not in key  # the granularities not picked (the picked one is under its setting/aquant)
    )
    out.append(
        (
            f"Block reconstruction error over the calibration images, seed {seeds[0]} (round-to-nearest -> "
            f"reconstructed); over all seeds {n_fallback} blocks kept round-to-nearest",
            ["model", "run"] + [f"block {i + 1}" for i in range(nblocks)],
            [row + [""] * (nblocks + 2 - len(row)) for row in block_rows],
        )
    )
    out.append(
        (
            "Checks (seed level: holds beyond max(seed spread, 2 standard errors))",
            ["claim", "verdict"],
            [[k, v] for k, v in figures["checks"].items()],
        )
    )
    return out


def _mean_sd_cell(entry: dict) -> str:
    return f"{entry['mean']:.2f} ± {entry['sd']:.2f}" if len(entry["per_seed"]) > 1 else f"{entry['mean']:.2f}"


def _seed_diff_cell(model_figures: dict, name: str, other: str) -> str:
    d = model_figures["seed_differences"].get(f"{name}: AQuant - {METHOD_LABELS[other]}")
    return "-" if d is None else f"{d['mean']:+.2f} ± {d['threshold']:.2f}"


def _granularity_text(figures: dict) -> str:
    candidates = figures.get("granularity_candidates") or ()
    if candidates:
        return (
            "border granularity picked per model and setting on the held-out validation images among "
            + ", ".join(f"`{g}`" for g in candidates)
            + f" with seed {figures['seeds'][0]}, then kept for every seed"
        )
    return f"granularity `{figures['recon']['border_granularity']}`"


def _paper(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def markdown(figures: dict, include_plot: bool = True) -> str:
    """The Markdown report (aquant.md, next to the plot; the tour links plots itself)."""
    from frugal.scripts import report

    c = figures["config"]
    r = figures["recon"]
    fp = ", ".join(
        name + ("" if m["width"] is None else f" (width {m['width']})") + f" {100 * m['fp_accuracy']:.2f} %"
        for name, m in figures["models"].items()
    )
    lines = [
        "# AQuant: learned activation rounding borders (block-reconstruction PTQ)",
        "",
        f"Float models trained {c['fp_steps']} steps on {figures['dataset']['name']} "
        f"({figures['dataset']['train']} train / {figures['dataset'].get('validation', 0)} held-out validation / "
        f"{figures['dataset']['test']} test images): FP top-1 {fp}. Each of {len(figures['seeds'])} seeds draws "
        f"its own {r['calibration_size']} calibration images and reconstruction randomness; within a seed every "
        f"method quantizes the same model from the same images. QDrop-style and AQuant run {r['iterations']} "
        f"iterations per block (batch {r['batch_size']}, drop p={r['drop_prob']}, weight lr {r['weight_lr']}, "
        f"scale lr {r['scale_lr']}) and differ only in AQuant's learned border ({_granularity_text(figures)}, "
        f"border lr {r['border_lr']}). A block whose reconstruction does not lower its calibration error below "
        f"round-to-nearest keeps round-to-nearest (fallback {'on' if r['fallback_to_nearest'] else 'off'}). "
        f"{figures['block_reconstructions']} blocks were reconstructed in this run "
        f"({figures['compiled_programs']} compiled training programs; the rest came from the block cache). "
        f"Run took {figures['seconds']:.0f} s; machine: {machine_text(figures['machine'])}.",
        "",
        "The paper columns are ResNet-18 on ImageNet (QDrop repository README, arXiv 2203.05740; AQuant "
        "abstract, arXiv 2208.11945: only W2A2 is public to us): context for the ordering, not comparable values.",
        "",
    ]
    for title, headers, rows in tables(figures):
        lines += [f"## {title}", "", report.markdown_table(headers, rows), ""]
    if include_plot and figures.get("plot"):
        lines += [f"![accuracy]({Path(figures['plot']).name})", ""]
    return "\n".join(lines)


def _plot(figures: dict, path: Path) -> Path:
    from frugal.scripts import report

    models = list(figures["models"])
    fig, axes = report.new_figure(1, len(models), figsize=(4.5 * len(models), 3.5), squeeze=False)
    methods = [m for m in METHODS if m in figures["config"]["methods"]]
    width = 0.8 / max(len(methods), 1)
    for ax, model_name in zip(axes[0], models):
        m = figures["models"][model_name]
        names = list(m["summary"])
        for i, method in enumerate(methods):
            xs = np.arange(len(names)) + (i - (len(methods) - 1) / 2) * width
            entries = [m["summary"][n][method] for n in names]
            ax.bar(
                xs,
                [e["mean"] for e in entries],
                width,
                label=METHOD_LABELS[method],
                yerr=[e["sd"] for e in entries],
                capsize=2,
                alpha=0.8,
            )
            for x, e in zip(xs, entries):  # every seed as a dot
                ax.plot([x] * len(e["per_seed"]), e["per_seed"], "k.", markersize=3)
        ax.axhline(100 * m["fp_accuracy"], color="black", linestyle="--", linewidth=1, label="FP")
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_ylabel("top-1 % (bars: seed mean ± sd; dots: seeds)")
        ax.set_title(f"{model_name} on {figures['dataset']['name']}")
    axes[0][0].legend(fontsize=8)
    return report.save_figure(fig, path)
