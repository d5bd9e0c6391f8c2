"""AQuant experiment: FP vs round-to-nearest vs QDrop-style reconstruction vs AQuant borders.

`run(config)` trains a float CIFAR-style ResNet (built-in `shapes` set by default, or a user's
CIFAR-10 / ImageNet-style folder), then quantizes it with `transforms.quant.block_recon` at every
W/A setting with each method, all from the same calibration images and the same iterations per
block, and writes `aquant.json`, `aquant.md` and `aquant.png` under `config.outdir`. The paper's
and QDrop's ResNet-18 ImageNet numbers are printed beside ours as context (different model and
data: compare the ordering, not the values).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from transforms.quant.aquant import GRANULARITIES
from transforms.quant.block_recon import METHODS

# ResNet-18 ImageNet top-1 (%): QDrop from its repository README, AQuant from its abstract
# (papers/ant-aquant-nested-ad.md section 3). AQuant's paper table for the other settings is not
# available to us.
PAPER_RESNET18 = {
    "FP": 71.06,
    "W4A4": {"qdrop": 69.13, "aquant": None},
    "W2A4": {"qdrop": 64.38, "aquant": None},
    "W3A3": {"qdrop": 65.68, "aquant": None},
    "W2A2": {"qdrop": 51.69, "aquant": 60.31},
}
METHOD_LABELS = {"rtn": "round-to-nearest", "qdrop": "QDrop-style", "aquant": "AQuant"}


@dataclasses.dataclass(frozen=True)
class AQuantExperimentConfig:
    dataset: str = "shapes"  # shapes | digits | cifar10 | imagefolder
    data_path: str | None = None
    n_train: int = 8000  # shapes only
    n_test: int = 1000
    image_size: int | None = None
    model: str = "cifar_resnet8"
    width: int = 16
    fp_steps: int = 800
    fp_batch_size: int = 64
    fp_learning_rate: float = 3e-3
    max_shift: int = 2
    settings: tuple[tuple[int, int], ...] = ((2, 2), (2, 4), (3, 3), (4, 4))
    methods: tuple[str, ...] = METHODS
    granularity: str = "channel_level"
    ablation: tuple[str, ...] = ("tensor", "channel", "level")  # extra AQuant granularities
    ablation_setting: tuple[int, int] = (2, 2)
    first_last_bits: int | None = 8
    kind: str = "int"
    calibration_size: int = 1024
    iterations: int = 500
    batch_size: int = 32
    weight_lr: float = 1e-2
    scale_lr: float = 1e-3
    border_lr: float = 1e-2
    seed: int = 0
    outdir: str = "reports/quant"
    fp_cache: str | None = None  # .npz: reuse the float model trained by an identical config
    progress: bool = True

    def __post_init__(self):
        if self.dataset not in ("shapes", "digits", "cifar10", "imagefolder"):
            raise ValueError(f"dataset={self.dataset!r}; choose shapes, digits, cifar10 or imagefolder")
        if self.model not in ("cifar_resnet8", "cifar_resnet20", "cifar_resnet18", "resnet18", "resnet50"):
            raise ValueError(f"model={self.model!r}; choose a ResNet from models.resnet")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods={self.methods!r}; choose from {METHODS}")
        for g in (self.granularity, *self.ablation):
            if g not in GRANULARITIES:
                raise ValueError(f"granularity {g!r}; choose from {GRANULARITIES}")
        if not self.settings:
            raise ValueError("settings must list at least one (weight_bits, act_bits) pair")
        for w, a in (*self.settings, self.ablation_setting):
            for name, bits in (("weight bits", w), ("activation bits", a)):
                if not isinstance(bits, int) or not 2 <= bits <= 8:
                    raise ValueError(f"{name}={bits!r} in settings is outside the supported range 2..8")
        for name in ("fp_steps", "calibration_size", "iterations", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


FP_TRAINING_FIELDS = ("dataset", "data_path", "n_train", "n_test", "image_size", "model", "width", "fp_steps",
                      "fp_batch_size", "fp_learning_rate", "max_shift", "seed")


def _fp_key(config: AQuantExperimentConfig) -> str:
    return json.dumps({f: getattr(config, f) for f in FP_TRAINING_FIELDS}, sort_keys=True)


def train_or_load_float_model(config: AQuantExperimentConfig, data, model):
    """Trains `model` with the config's float recipe, or loads the arrays a previous run with the
    same recipe stored in `config.fp_cache` (.npz, no pickle). Returns (model, train seconds)."""
    from flax import nnx

    from scripts.harness import fit_classifier

    cache = Path(config.fp_cache) if config.fp_cache else None
    if cache is not None and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        if str(stored["__recipe__"]) != _fp_key(config):
            raise ValueError(f"fp_cache={str(cache)!r} holds a model trained with {stored['__recipe__']}, not this "
                             f"config's {_fp_key(config)}; pass another --fp-cache path or delete the file")
        leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))
        values = [np.asarray(stored[jax.tree_util.keystr(path)]) for path, _ in leaves]
        nnx.update(model, jax.tree_util.tree_unflatten(treedef, values))
        return model, float(stored["__seconds__"])
    fit = fit_classifier(model, data, steps=config.fp_steps, batch_size=config.fp_batch_size,
                         learning_rate=config.fp_learning_rate, max_shift=config.max_shift, seed=config.seed,
                         progress=config.progress)
    if cache is not None:
        leaves, _ = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(fit.model)))
        arrays = {jax.tree_util.keystr(path): np.asarray(v) for path, v in leaves}
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, __recipe__=np.asarray(_fp_key(config)), __seconds__=np.asarray(fit.seconds), **arrays)
    return fit.model, fit.seconds


def setting_name(weight_bits: int, act_bits: int) -> str:
    return f"W{weight_bits}A{act_bits}"


def _load_data(config: AQuantExperimentConfig):
    from scripts.data import load_dataset, make_shapes_dataset

    if config.dataset == "shapes":
        return make_shapes_dataset(config.n_train, config.n_test, image_size=config.image_size or 32, seed=config.seed)
    return load_dataset(config.dataset, data_path=config.data_path, image_size=config.image_size, seed=config.seed)


def accuracy(net, images: np.ndarray, labels: np.ndarray, batch: int = 250) -> float:
    """Top-1 accuracy of a callable network over all images."""
    preds = [np.argmax(np.asarray(net(images[i:i + batch])), axis=-1) for i in range(0, len(images), batch)]
    return float(np.mean(np.concatenate(preds) == labels))


def _recon_config(config: AQuantExperimentConfig, w: int, a: int, method: str, granularity: str):
    from transforms.quant.block_recon import ReconConfig

    return ReconConfig(weight_bits=w, act_bits=a, first_last_bits=config.first_last_bits, kind=config.kind,
                       method=method, border_granularity=granularity, calibration_size=config.calibration_size,
                       iterations=config.iterations, batch_size=config.batch_size, weight_lr=config.weight_lr,
                       scale_lr=config.scale_lr, border_lr=config.border_lr, seed=config.seed,
                       progress=config.progress)


def _block_summary(log: dict) -> list[dict]:
    return [{"block": b["block"], "loss_rtn": b["loss_rtn"], "loss_final": b["loss_final"],
             "train_loss_first": b["history"][0]["recon_loss"] if b["history"] else None,
             "train_loss_last": b["history"][-1]["recon_loss"] if b["history"] else None,
             "history": b["history"], "seconds": b["seconds"]} for b in log["blocks"]]


def run(config: AQuantExperimentConfig) -> dict:
    """Trains the float model, quantizes it every way, and returns (and writes) the figures."""
    from models.registry import create_image_model
    from scripts import report
    from transforms.quant.block_recon import float_network, quantize_resnet

    t0 = time.perf_counter()
    data = _load_data(config)
    kwargs = {"width": config.width} if config.model.startswith("cifar_") else {}
    model = create_image_model(config.model, num_classes=data.num_classes, in_channels=data.image_shape[-1],
                               seed=config.seed, **kwargs)
    from_cache = bool(config.fp_cache) and Path(config.fp_cache).exists()
    trained, fp_seconds = train_or_load_float_model(config, data, model)
    trained.eval()
    fp_accuracy = accuracy(float_network(trained), data.test_x, data.test_y)
    # One seeded calibration subset of the training images, shared by every method and setting.
    order = np.random.default_rng([config.seed, 1]).permutation(len(data.train_x))
    calibration = data.train_x[order[:config.calibration_size]]

    results, blocks = {}, {}
    for w, a in config.settings:
        name = setting_name(w, a)
        results[name] = {}
        for method in config.methods:
            net, log = quantize_resnet(trained, calibration, _recon_config(config, w, a, method, config.granularity))
            results[name][method] = accuracy(net, data.test_x, data.test_y)
            blocks[f"{name}/{method}"] = _block_summary(log)
    ablation = {}
    if config.ablation and "aquant" in config.methods:
        w, a = config.ablation_setting
        name = setting_name(w, a)
        for granularity in (config.granularity, *config.ablation):
            if granularity == config.granularity and name in results:
                ablation[granularity] = results[name]["aquant"]
                continue
            net, log = quantize_resnet(trained, calibration, _recon_config(config, w, a, "aquant", granularity))
            ablation[granularity] = accuracy(net, data.test_x, data.test_y)
            blocks[f"{name}/aquant-{granularity}"] = _block_summary(log)

    figures = {
        "config": dataclasses.asdict(config),
        "dataset": {"name": data.name, "train": len(data.train_x), "test": len(data.test_x),
                    "image_shape": list(data.image_shape), "classes": data.num_classes},
        "fp_accuracy": fp_accuracy,
        "fp_train_seconds": fp_seconds,
        "fp_from_cache": from_cache,
        "accuracy": results,
        "ablation": {"setting": setting_name(*config.ablation_setting), "accuracy": ablation},
        "blocks": blocks,
        "checks": _checks(results, blocks),
        "paper_resnet18_imagenet": PAPER_RESNET18,
        "machine": report.machine_description(),
        "seconds": time.perf_counter() - t0,
    }
    outdir = Path(config.outdir)
    figures["plot"] = str(_plot(figures, outdir / "aquant.png"))
    report.write_json(outdir / "aquant.json", figures)
    (outdir / "aquant.md").write_text(markdown(figures))
    return figures


def _checks(results: dict, blocks: dict) -> dict:
    checks = {}
    for name, accs in results.items():
        if {"aquant", "qdrop"} <= accs.keys():
            checks[f"{name}: AQuant > QDrop-style"] = accs["aquant"] > accs["qdrop"]
        if {"aquant", "rtn"} <= accs.keys():
            checks[f"{name}: AQuant >= round-to-nearest"] = accs["aquant"] >= accs["rtn"]
    reconstructed = [b for key, bs in blocks.items() if not key.endswith("/rtn") for b in bs]
    checks["every block: reconstruction error below round-to-nearest"] = all(
        b["loss_final"] < b["loss_rtn"] for b in reconstructed)
    checks["every block: training loss decreased"] = all(
        b["train_loss_last"] < b["train_loss_first"] for b in reconstructed if len(b["history"]) > 1)
    return checks


def tables(figures: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, headers, rows) for the console and the Markdown report."""
    methods = [m for m in METHODS if m in figures["config"]["methods"]]
    headers = ["setting", "FP"] + [METHOD_LABELS[m] for m in methods] + ["paper R18 QDrop", "paper R18 AQuant"]
    rows = []
    for name, accs in figures["accuracy"].items():
        paper = PAPER_RESNET18.get(name, {})
        rows.append([name, f"{100 * figures['fp_accuracy']:.2f}"]
                    + [f"{100 * accs[m]:.2f}" for m in methods]
                    + [_paper(paper.get("qdrop")), _paper(paper.get("aquant"))])
    out = [(f"Top-1 % on {figures['dataset']['name']} test ({figures['config']['model']}, "
            f"first/last {figures['config']['first_last_bits']}-bit); paper columns: ResNet-18 ImageNet",
            headers, rows)]
    if figures["ablation"]["accuracy"]:
        out.append((f"AQuant border granularity ablation at {figures['ablation']['setting']}",
                    ["granularity", "top-1 %"],
                    [[g, f"{100 * v:.2f}"] for g, v in figures["ablation"]["accuracy"].items()]))
    block_rows = []
    for key, bs in figures["blocks"].items():
        if key.endswith("/rtn"):
            continue
        block_rows.append([key] + [f"{b['loss_rtn']:.4g} -> {b['loss_final']:.4g}" for b in bs])
    nblocks = max((len(bs) for bs in figures["blocks"].values()), default=0)
    out.append(("Block reconstruction error (round-to-nearest -> reconstructed, calibration images)",
                ["run"] + [f"block {i + 1}" for i in range(nblocks)], block_rows))
    out.append(("Checks", ["claim", "holds"], [[k, "yes" if v else "NO"] for k, v in figures["checks"].items()]))
    return out


def _paper(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def markdown(figures: dict, include_plot: bool = True) -> str:
    """The Markdown report (aquant.md, next to the plot; the tour links plots itself)."""
    from scripts import report

    c = figures["config"]
    lines = [
        "# AQuant: learned activation rounding borders (block-reconstruction PTQ)",
        "",
        f"Model {c['model']} (width {c['width']}) trained {c['fp_steps']} steps on {figures['dataset']['name']} "
        f"({figures['dataset']['train']} train / {figures['dataset']['test']} test images); FP top-1 "
        f"{100 * figures['fp_accuracy']:.2f} %. Every method quantizes the same model from the same "
        f"{c['calibration_size']} calibration images; QDrop-style and AQuant run {c['iterations']} iterations "
        f"per block (batch {c['batch_size']}, drop p=0.5); AQuant border granularity `{c['granularity']}`. "
        f"Run took {figures['seconds']:.0f} s on {figures['machine']['cpu_count']} CPUs "
        f"({figures['machine']['backend']}).",
        "",
        "The paper columns are ResNet-18 on ImageNet (QDrop repository README; AQuant abstract: only W2A2 is "
        "public to us): context for the ordering, not comparable values.",
        "",
    ]
    for title, headers, rows in tables(figures):
        lines += [f"## {title}", "", report.markdown_table(headers, rows), ""]
    if include_plot and figures.get("plot"):
        lines += [f"![accuracy]({Path(figures['plot']).name})", ""]
    return "\n".join(lines)


def _plot(figures: dict, path: Path) -> Path:
    from scripts import report

    fig, ax = report.new_figure(figsize=(7, 3.5))
    names = list(figures["accuracy"])
    methods = [m for m in METHODS if m in figures["config"]["methods"]]
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        xs = np.arange(len(names)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(xs, [100 * figures["accuracy"][n][m] for n in names], width, label=METHOD_LABELS[m])
    ax.axhline(100 * figures["fp_accuracy"], color="black", linestyle="--", linewidth=1, label="FP")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("top-1 %")
    ax.set_title(f"{figures['config']['model']} on {figures['dataset']['name']}")
    ax.legend(fontsize=8)
    return report.save_figure(fig, path)
