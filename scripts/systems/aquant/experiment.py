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
import json
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
    "model",
    "width",
    "fp_steps",
    "fp_batch_size",
    "fp_learning_rate",
    "max_shift",
    "seed",
)


def _fp_key(config: AQuantConfig) -> str:
    return json.dumps({f: getattr(config, f) for f in FP_TRAINING_FIELDS}, sort_keys=True)


def train_or_load_float_model(config: AQuantConfig, data, model):
    """Trains `model` with the config's float recipe, or loads the arrays a previous run with the
    same recipe stored in `config.fp_cache` (.npz, no pickle). Returns (model, train seconds)."""
    from flax import nnx

    from frugal.scripts.harness import fit_classifier

    cache = Path(config.fp_cache) if config.fp_cache else None
    if cache is not None and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        if str(stored["__recipe__"]) != _fp_key(config):
            raise ValueError(
                f"fp_cache={str(cache)!r} holds a model trained with {stored['__recipe__']}, not this "
                f"config's {_fp_key(config)}; pass another --fp-cache path or delete the file"
            )
        leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))
        values = [np.asarray(stored[jax.tree_util.keystr(path)]) for path, _ in leaves]
        nnx.update(model, jax.tree_util.tree_unflatten(treedef, values))
        return model, float(stored["__seconds__"])
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
        np.savez(cache, __recipe__=np.asarray(_fp_key(config)), __seconds__=np.asarray(fit.seconds), **arrays)
    return fit.model, fit.seconds


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


def recon_config_for(config: AQuantConfig, w: int, a: int, method: str, granularity: str) -> ReconConfig:
    # Only the per-run fields change; everything else is config.recon, shared by every method.
    return dataclasses.replace(config.recon, weight_bits=w, act_bits=a, method=method, border_granularity=granularity)


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
        }
        for b in log["blocks"]
    ]


def run(config: AQuantConfig) -> dict:
    """Trains the float model, quantizes it every way, and returns (and writes) the figures."""
    from frugal.models.registry import create_image_model
    from frugal.scripts import report
    from frugal.transforms.quant.block_recon import float_network, quantize_resnet

    t0 = time.perf_counter()
    before = report.machine_description()
    data, (val_x, val_y) = load_data(config)
    kwargs = {"width": config.width} if config.model.startswith("cifar_") else {}
    model = create_image_model(
        config.model, num_classes=data.num_classes, in_channels=data.image_shape[-1], seed=config.seed, **kwargs
    )
    from_cache = bool(config.fp_cache) and Path(config.fp_cache).exists()
    trained, fp_seconds = train_or_load_float_model(config, data, model)
    trained.eval()
    # One seeded calibration subset of the training images, shared by every method and setting.
    order = np.random.default_rng([config.seed, 1]).permutation(len(data.train_x))
    calibration = data.train_x[order[: config.recon.calibration_size]]

    correct = {}  # run name -> per-test-image correctness, for paired differences

    def evaluate(name: str, net) -> dict:
        correct[name] = correct_predictions(net, data.test_x, data.test_y)
        acc = float(correct[name].mean())
        out = {"test": acc, "test_std_error": std_error(acc, len(data.test_x))}
        if len(val_x):
            out["validation"] = accuracy(net, val_x, val_y)
        return out

    fp = evaluate("FP", float_network(trained))
    results, blocks, fallbacks, selection = {}, {}, {}, {}

    def quantize(run_name: str, w: int, a: int, method: str, granularity: str) -> dict:
        net, log = quantize_resnet(trained, calibration, recon_config_for(config, w, a, method, granularity))
        blocks[run_name] = _block_summary(log)
        fallbacks[run_name] = log["fallbacks"]
        return evaluate(run_name, net)

    fixed = config.recon.border_granularity  # AQuant's border when not picked on validation
    for w, a in config.setting_pairs:
        name = setting_name(w, a)
        results[name] = {}
        for method in config.methods:
            if method != "aquant" or not config.granularity_candidates:
                results[name][method] = quantize(f"{name}/{method}", w, a, method, fixed)
                continue
            tried = {g: quantize(f"{name}/aquant-{g}", w, a, method, g) for g in config.granularity_candidates}
            best = max(config.granularity_candidates, key=lambda g: tried[g]["validation"])  # first of equals
            results[name]["aquant"] = {**tried[best], "granularity": best}
            correct[f"{name}/aquant"] = correct[f"{name}/aquant-{best}"]
            selection[name] = {"selected": best, "results": tried}
    ablation = {}
    if config.ablation and "aquant" in config.methods:
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
            if f"{name}/aquant" in correct and f"{name}/{other}" in correct:
                diff, se = paired_difference(correct[f"{name}/aquant"], correct[f"{name}/{other}"])
                differences[f"{name}: AQuant - {METHOD_LABELS[other]}"] = {"points": 100 * diff, "std_error": 100 * se}

    figures = {
        "config": dataclasses.asdict(config),
        "recon": dataclasses.asdict(config.recon),
        "granularity_candidates": list(config.granularity_candidates),
        "dataset": {
            "name": data.name,
            "train": len(data.train_x),
            "validation": int(len(val_x)),
            "test": len(data.test_x),
            "image_shape": list(data.image_shape),
            "classes": data.num_classes,
        },
        "fp_accuracy": fp["test"],
        "fp": fp,
        "fp_train_seconds": fp_seconds,
        "fp_from_cache": from_cache,
        "accuracy": {n: {m: r["test"] for m, r in accs.items()} for n, accs in results.items()},
        "results": results,
        "differences": differences,
        "fallbacks": fallbacks,
        "ablation": {
            "setting": config.ablation_setting,
            "accuracy": {g: r["test"] for g, r in ablation.items()},
            "results": ablation,
        },
        "granularity_selection": selection,
        "blocks": blocks,
        "checks": _checks(results, blocks, differences, fallback=config.fallback),
        "paper_resnet18_imagenet": PAPER_RESNET18,
        "machine": report.machine_record(before),
        "seconds": time.perf_counter() - t0,
    }
    outdir = Path(config.outdir)
    figures["plot"] = str(_plot(figures, outdir / "aquant.png"))
    report.write_json(outdir / "aquant.json", figures)
    (outdir / "aquant.md").write_text(markdown(figures))
    return figures


# A paired difference "holds" only beyond this many standard errors (about 95% two-sided).
NOISE_SE = 2.0


def verdict(points: float, std_error: float, *, at_least: bool = False) -> str:
    """ "holds" when the difference clears its noise, "within noise" when |diff| <= NOISE_SE x SE,
    else "NO". With `at_least` (a ">=" claim), a difference within noise also holds."""
    if points > NOISE_SE * std_error:
        return "holds"
    if points >= -NOISE_SE * std_error:
        return "holds" if at_least else "within noise"
    return "NO"


def _checks(results: dict, blocks: dict, differences: dict, *, fallback: bool) -> dict:
    """The claims, judged on paired test-image differences against their standard errors."""
    checks = {}
    for name in results:
        for other, at_least, claim in (
            ("qdrop", False, "AQuant > QDrop-style"),
            ("rtn", True, "AQuant >= round-to-nearest"),
        ):
            d = differences.get(f"{name}: AQuant - {METHOD_LABELS[other]}")
            if d is not None:
                checks[f"{name}: {claim} ({d['points']:+.2f} ± {d['std_error']:.2f})"] = verdict(
                    d["points"], d["std_error"], at_least=at_least
                )
    reconstructed = [b for key, bs in blocks.items() if not key.endswith("/rtn") for b in bs]
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
    # Informational: the relaxed objective (soft rounding, random dropping) per logged chunk. As the
    # rounding regularizer anneals it pushes the soft weights to hard ones, which can raise this
    # loss late in short runs even though the hard-rounded error above keeps falling.
    trend = [b for b in reconstructed if len(b["history"]) > 1]
    checks["(info) every block: relaxed training loss lower in the last logged chunk than the first"] = (
        "yes" if all(b["train_loss_last"] < b["train_loss_first"] for b in trend) else "no"
    )
    return checks


def _diff_cell(figures: dict, name: str, other: str) -> str:
    d = figures["differences"].get(f"{name}: AQuant - {METHOD_LABELS[other]}")
    return "-" if d is None else f"{d['points']:+.2f} ± {d['std_error']:.2f}"


def tables(figures: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, rows) for the console and the Markdown report."""
    methods = [m for m in METHODS if m in figures["config"]["methods"]]
    n_test = figures["dataset"]["test"]
    headers = (
        ["setting", "FP"]
        + [METHOD_LABELS[m] for m in methods]
        + ["AQuant - QDrop (paired)", "AQuant - RTN (paired)", "paper R18 QDrop", "paper R18 AQuant"]
    )
    rows = []
    for name, accs in figures["accuracy"].items():
        paper = PAPER_RESNET18.get(name, {})
        rows.append(
            [name, f"{100 * figures['fp_accuracy']:.2f}"]
            + [f"{100 * accs[m]:.2f}" for m in methods]
            + [_diff_cell(figures, name, "qdrop"), _diff_cell(figures, name, "rtn")]
            + [_paper(paper.get("qdrop")), _paper(paper.get("aquant"))]
        )
    se = 100 * std_error(0.5, n_test)
    out = [
        (
            f"Top-1 % on {figures['dataset']['name']} test ({n_test} images, binomial std error <= {se:.2f}; "
            f"{figures['config']['model']}, first/last {figures['recon']['first_last_bits']}-bit); "
            "paper columns: ResNet-18 ImageNet",
            headers,
            rows,
        )
    ]
    if figures["dataset"].get("validation"):
        out.append(
            (
                f"Top-1 % on the {figures['dataset']['validation']} held-out training images (knob selection)",
                ["setting", "FP"] + [METHOD_LABELS[m] for m in methods],
                [
                    [name, f"{100 * figures['fp']['validation']:.2f}"]
                    + [f"{100 * figures['results'][name][m]['validation']:.2f}" for m in methods]
                    for name in figures["results"]
                ],
            )
        )
    selection = figures.get("granularity_selection") or {}
    if selection:
        candidates = figures["granularity_candidates"]
        out.append(
            (
                "AQuant border granularity per setting, picked on the validation images "
                "(validation / test top-1 %; * = picked)",
                ["setting"] + list(candidates),
                [
                    [name]
                    + [
                        ("* " if g == sel["selected"] else "")
                        + f"{100 * sel['results'][g]['validation']:.2f} / {100 * sel['results'][g]['test']:.2f}"
                        for g in candidates
                    ]
                    for name, sel in selection.items()
                ],
            )
        )
    if figures["ablation"]["accuracy"]:
        out.append(
            (
                f"AQuant border granularity ablation at {figures['ablation']['setting']} (test top-1 %)",
                ["granularity", "top-1 %", "std error"],
                [
                    [g, f"{100 * r['test']:.2f}", f"{100 * r['test_std_error']:.2f}"]
                    for g, r in figures["ablation"]["results"].items()
                ],
            )
        )
    block_rows = []
    for key, bs in figures["blocks"].items():
        if key.endswith("/rtn"):
            continue
        block_rows.append(
            [key]
            + [
                f"{b['loss_rtn']:.4g} -> {b['loss_reconstructed']:.4g}" + ("" if b["kept"] else " (kept RTN)")
                for b in bs
            ]
        )
    nblocks = max((len(bs) for bs in figures["blocks"].values()), default=0)
    n_fallback = sum(figures["fallbacks"].values())
    n_blocks = sum(len(bs) for key, bs in figures["blocks"].items() if not key.endswith("/rtn"))
    out.append(
        (
            f"Block reconstruction error over the calibration images (round-to-nearest -> reconstructed); "
            f"{n_fallback} of {n_blocks} blocks kept round-to-nearest",
            ["run"] + [f"block {i + 1}" for i in range(nblocks)],
            block_rows,
        )
    )
    out.append(
        (
            "Checks (paired differences: holds beyond 2 standard errors)",
            ["claim", "verdict"],
            [[k, v] for k, v in figures["checks"].items()],
        )
    )
    return out


def _granularity_text(figures: dict) -> str:
    candidates = figures.get("granularity_candidates") or ()
    if candidates:
        return "border granularity picked per setting on the held-out validation images among " + ", ".join(
            f"`{g}`" for g in candidates
        )
    return f"granularity `{figures['recon']['border_granularity']}`"


def _paper(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def markdown(figures: dict, include_plot: bool = True) -> str:
    """The Markdown report (aquant.md, next to the plot; the tour links plots itself)."""
    from frugal.scripts import report

    c = figures["config"]
    r = figures["recon"]
    lines = [
        "# AQuant: learned activation rounding borders (block-reconstruction PTQ)",
        "",
        f"Model {c['model']} (width {c['width']}) trained {c['fp_steps']} steps on {figures['dataset']['name']} "
        f"({figures['dataset']['train']} train / {figures['dataset'].get('validation', 0)} held-out validation / "
        f"{figures['dataset']['test']} test images); FP top-1 {100 * figures['fp_accuracy']:.2f} %. Every method "
        f"quantizes the same model from the same {r['calibration_size']} calibration images; QDrop-style and "
        f"AQuant run {r['iterations']} iterations per block (batch {r['batch_size']}, drop p={r['drop_prob']}, "
        f"weight lr {r['weight_lr']}, scale lr {r['scale_lr']}) and differ only in AQuant's learned border "
        f"({_granularity_text(figures)}, border lr {r['border_lr']}). A block whose reconstruction "
        f"does not lower its calibration error below round-to-nearest keeps round-to-nearest "
        f"(fallback {'on' if r['fallback_to_nearest'] else 'off'}). Differences are paired over the same test "
        f"images (± one standard error). Run took {figures['seconds']:.0f} s; machine: "
        f"{machine_text(figures['machine'])}.",
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

    fig, ax = report.new_figure(figsize=(7, 3.5))
    names = list(figures["accuracy"])
    methods = [m for m in METHODS if m in figures["config"]["methods"]]
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        xs = np.arange(len(names)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(
            xs,
            [100 * figures["accuracy"][n][m] for n in names],
            width,
            label=METHOD_LABELS[m],
            yerr=[100 * figures["results"][n][m]["test_std_error"] for n in names],
            capsize=2,
        )
    ax.axhline(100 * figures["fp_accuracy"], color="black", linestyle="--", linewidth=1, label="FP")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("top-1 %")
    ax.set_title(f"{figures['config']['model']} on {figures['dataset']['name']}")
    ax.legend(fontsize=8)
    return report.save_figure(fig, path)
