"""The experiments behind `frugal ganfp zoo | train | eval` and their reports.

- `run_zoo`: the zoo (`zoo_run.build_zoo`), each family's Frechet distance and fingerprint-spectrum
  peaks, the spectra plot and example images.
- `run_train`: one detector method, one seed: per-family Acc and AP.
- `run_eval`: every method x every seed on the same zoo (one process, the same data), per-family
  tables, the mean over the unseen families with its spread over seeds, and the checks the issue
  names (fingerprint augmentation above no augmentation and above blur+JPEG on mean unseen AP; the
  zoo detectable in-family). Each detector run's figures are cached by recipe, so a killed `eval`
  resumes at the next unfinished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from frugal.scripts.systems.gan_fingerprint.config import GanfpConfig
from frugal.scripts.systems.gan_fingerprint.detector import (
    DetectorSettings,
    check_method,
    predict,
    score_set,
    train_detector,
)
from frugal.scripts.systems.gan_fingerprint.metrics import detection_metrics
from frugal.scripts.systems.gan_fingerprint.user_data import LabelledImages, load_cnndetection
from frugal.scripts.systems.gan_fingerprint.zoo_run import Zoo, build_zoo, zoo_quality, zoo_settings

_RESULT_FORMAT = 1


def detector_settings(config: GanfpConfig) -> DetectorSettings:
    return DetectorSettings(
        depth=config.depth,
        width=config.det_width,
        steps=config.det_steps,
        batch_size=config.det_batch,
        learning_rate=config.det_lr,
        eval_every=config.eval_every,
        aug_prob=config.aug_prob,
        perturb=config.perturb_config(),
    )


def _run_key(config: GanfpConfig, method: str, seed: int) -> str:
    settings = {
        "format": _RESULT_FORMAT,
        "zoo": {f: zoo_settings(config, f) for f in config.families},
        "ae": zoo_settings(config) if check_method(method)[1] == "fingerprint" else None,
        "detector": dataclasses.asdict(detector_settings(config)),
        "method": method,
        "seed": seed,
        "train_families": list(config.train_families),
        "val_family": config.val_family,
        "test_root": None if config.test_root is None else str(Path(config.test_root).resolve()),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_json(path: Path, figures: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(figures, f)
    os.replace(tmp, path)


def load_user_sets(config: GanfpConfig) -> dict[str, LabelledImages]:
    """The user's test generators (`test_root`, CNNDetection layout), none without it."""
    if config.test_root is None:
        return {}
    return load_cnndetection(config.test_root, size=config.size)


def detector_run(
    zoo: Zoo,
    config: GanfpConfig,
    method: str,
    seed: int,
    progress=lambda msg: None,
    user_sets: dict[str, LabelledImages] | None = None,
) -> dict:
    """Trains (or reads from the cache) one detector and tests it on every family (and on each of
    `user_sets`, the user's generators, under "user_test")."""
    root = config.cache_root()
    path = None if root is None else root / "detectors" / f"{method}-seed{seed}-{_run_key(config, method, seed)}.json"
    if path is not None and path.exists():
        return json.loads(path.read_text())
    progress(f"detector {method}, seed {seed}")
    fake_train = np.concatenate([zoo.fakes[f]["train"] for f in config.train_families])
    run = train_detector(
        method,
        zoo.real["train"],
        fake_train,
        zoo.real["val"],
        zoo.fakes[config.val_family]["val"],
        settings=detector_settings(config),
        seed=seed,
        ae=zoo.ae,
        progress=config.progress,
    )
    test = {f: score_set(run.model, zoo.real["test"], zoo.fakes[f]["test"]) for f in config.families}
    user_test = {gan: detection_metrics(s.labels, predict(run.model, s.images)) for gan, s in (user_sets or {}).items()}
    figures = {
        "method": method,
        "seed": seed,
        "best_step": run.best_step,
        "val": run.val,
        "test": test,
        "user_test": user_test,
        "seconds": run.seconds,
        "history": run.history,
    }
    if path is not None:
        _atomic_json(path, figures)
    return figures


def _mean_sd(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}


def summarize(runs: dict[str, list[dict]], config: GanfpConfig) -> dict:
    """Per method: per-family Acc / AP (mean, sd over seeds), and the mean over the unseen families."""
    unseen = config.test_families()
    out = {}
    for method, seeds in runs.items():
        families = {
            f: {m: _mean_sd([r["test"][f][m] for r in seeds]) for m in ("ap", "acc", "real_acc", "fake_acc")}
            for f in config.families
        }
        out[method] = {
            "families": families,
            "unseen_ap": _mean_sd([np.mean([r["test"][f]["ap"] for f in unseen]) for r in seeds]),
            "unseen_acc": _mean_sd([np.mean([r["test"][f]["acc"] for f in unseen]) for r in seeds]),
            "train_ap": _mean_sd([np.mean([r["test"][f]["ap"] for f in config.train_families]) for r in seeds]),
            "val_ap": _mean_sd([r["val"]["ap"] for r in seeds]),
            "user": {
                gan: {m: _mean_sd([r["user_test"][gan][m] for r in seeds]) for m in ("ap", "acc")}
                for gan in seeds[0].get("user_test", {})
            },
            "best_step": [r["best_step"] for r in seeds],
            "seconds": float(np.sum([r["seconds"] for r in seeds])),
        }
    return out


def paired_verdict(ours: list[float], theirs: list[float]) -> dict:
    """Paired over seeds: 'holds' when the mean difference is positive and beyond 2 standard errors
    of the paired differences, 'direction only' when positive but within, else 'does not hold'."""
    d = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    if mean > 0 and len(d) > 1 and mean > 2 * se:
        verdict = "holds"
    elif mean > 0:
        verdict = "direction only (within 2 SE)" if len(d) > 1 else "direction only (one seed)"
    else:
        verdict = "does not hold"
    return {"difference": mean, "se": se, "per_seed": d.tolist(), "verdict": verdict}


def checks(summary: dict, config: GanfpConfig) -> list[dict]:
    out = []
    if "fingerprint" in summary:
        for rival, label in (("none", "no augmentation"), ("blur_jpeg", "blur + JPEG")):
            if rival not in summary:
                continue
            for metric in ("unseen_ap", "unseen_acc"):
                v = paired_verdict(summary["fingerprint"][metric]["values"], summary[rival][metric]["values"])
                name = "AP" if metric == "unseen_ap" else "Acc"
                out.append(
                    {
                        "claim": f"fingerprint augmentation beats {label} on mean unseen {name}",
                        "ours": f"{summary['fingerprint'][metric]['mean']:.4f} vs {summary[rival][metric]['mean']:.4f} "
                        f"(diff {v['difference']:+.4f}, SE {v['se']:.4f}, {len(config.seeds)} seeds)",
                        "verdict": v["verdict"],
                        **v,
                    }
                )
    if "none" in summary:
        train_ap = summary["none"]["train_ap"]["mean"]
        out.append(
            {
                "claim": "the training family is detectable in-family (no augmentation, AP close to 1)",
                "ours": f"AP {train_ap:.4f}",
                "verdict": "holds" if train_ap >= 0.95 else "does not hold",
            }
        )
    return out


def _write_outputs(config: GanfpConfig, name: str, figures: dict, markdown: str) -> None:
    from frugal.scripts.report import write_json

    if not config.outdir:
        return
    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    write_json(outdir / f"{name}.json", figures)
    (outdir / f"{name}.md").write_text(markdown)


def plot_spectra(spectra: dict[str, np.ndarray], path: Path) -> None:
    """One panel per source: the mean log-amplitude spectrum of its fingerprints x - AE(x)."""
    from frugal.scripts.report import new_figure, save_figure

    names = list(spectra)
    cols = min(len(names), 5)
    rows = math.ceil(len(names) / cols)
    fig, axes = new_figure(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        ax.imshow(spectra[name], cmap="magma")
        ax.set_title(name, fontsize=8)
    fig.suptitle("mean fingerprint spectrum log|FFT(x - AE(x))| (centre = DC)", fontsize=9)
    save_figure(fig, path)


def plot_examples(zoo: Zoo, config: GanfpConfig, path: Path, per_row: int = 6) -> None:
    """Rows: real test patches, then each family's test samples."""
    from frugal.scripts.report import new_figure, save_figure

    sources = [("real", zoo.real["test"])] + [(f, zoo.fakes[f]["test"]) for f in config.families]
    fig, axes = new_figure(len(sources), per_row, figsize=(1.1 * per_row, 1.15 * len(sources)), squeeze=False)
    for r, (name, images) in enumerate(sources):
        for c in range(per_row):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(np.clip(images[c], 0, 1), interpolation="nearest")
        axes[r, 0].set_title(name, fontsize=7, loc="left")
    save_figure(fig, path)


def _progress_fn(config: GanfpConfig, progress):
    return progress if progress is not None else (lambda msg: None)


def run_zoo(config: GanfpConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Builds the zoo and measures it; writes ganfp_zoo.{json,md}, the spectra and examples plots."""
    from frugal.scripts.report import machine_description, machine_record

    before = machine_description()
    zoo = build_zoo(config, _progress_fn(config, progress))
    figures = zoo_figures(zoo, config)
    figures["machine"] = machine_record(before)
    if config.outdir:
        plot_spectra(figures.pop("spectra"), Path(config.outdir) / "ganfp_spectra.png")
        plot_examples(zoo, config, Path(config.outdir) / "ganfp_examples.png")
    else:
        figures.pop("spectra")
    _write_outputs(config, "ganfp_zoo", figures, zoo_markdown(figures))
    return figures


def zoo_figures(zoo: Zoo, config: GanfpConfig) -> dict:
    quality = zoo_quality(zoo, config)
    return {
        "real_patches": {split: len(x) for split, x in zoo.real.items()},
        "families": {
            name: {**quality["families"][name], **{k: v for k, v in zoo.info[name].items() if k != "final"}}
            for name in config.families
        },
        "frechet_floor": quality["frechet_floor"],
        "real": quality["real"],
        "spectra": quality["spectra"],
        "training": {name: zoo.info[name].get("final") for name in zoo.info},
    }


def zoo_markdown(figures: dict) -> str:
    from frugal.scripts.report import markdown_table

    rows = [
        [
            name,
            f["kind"],
            f["steps"],
            f"{f['frechet']:.3f}",
            f"{f['peak_contrast_2']:+.2f}",
            f"{f['peak_contrast_4']:+.2f}",
        ]
        for name, f in figures["families"].items()
    ]
    rows.append(
        [
            "real (test)",
            "-",
            "-",
            f"{figures['frechet_floor']:.3f} (val vs test)",
            f"{figures['real']['peak_contrast_2']:+.2f}",
            f"{figures['real']['peak_contrast_4']:+.2f}",
        ]
    )
    return (
        "# GAN-fingerprint zoo\n\n"
        + markdown_table(["family", "kind", "steps", "Frechet to real test", "peak N/2 (log)", "peak N/4 (log)"], rows)
        + f"\n\nReal patches per split: {figures['real_patches']}.\n"
    )


def run_train(config: GanfpConfig, progress: Callable[[str], None] | None = None) -> dict:
    """One detector (`train_method`, the first seed) trained and tested on every family."""
    user_sets = load_user_sets(config)  # read first: a bad folder fails before any training
    zoo = build_zoo(config, _progress_fn(config, progress))
    run = detector_run(zoo, config, config.train_method, config.seeds[0], _progress_fn(config, progress), user_sets)
    figures = {
        "method": config.train_method,
        "seed": config.seeds[0],
        "train_families": list(config.train_families),
        "val_family": config.val_family,
        "test_families": list(config.test_families()),
        **{k: run[k] for k in ("best_step", "val", "test", "user_test", "seconds")},
    }
    return figures


def run_eval(config: GanfpConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Every method x seed on one zoo; writes ganfp_eval.{json,md} (and the zoo's plots) to outdir."""
    from frugal.scripts.report import machine_description, machine_record

    before = machine_description()
    progress = _progress_fn(config, progress)
    user_sets = load_user_sets(config)  # read first: a bad folder fails before any training
    zoo = build_zoo(config, progress)
    runs = {m: [detector_run(zoo, config, m, s, progress, user_sets) for s in config.seeds] for m in config.methods}
    summary = summarize(runs, config)
    zoo_fig = zoo_figures(zoo, config)
    spectra = zoo_fig.pop("spectra")
    figures = {
        "train_families": list(config.train_families),
        "val_family": config.val_family,
        "test_families": list(config.test_families()),
        "seeds": list(config.seeds),
        "zoo": zoo_fig,
        "summary": summary,
        "checks": checks(summary, config),
        "runs": {m: [{k: v for k, v in r.items() if k != "history"} for r in rs] for m, rs in runs.items()},
        "machine": machine_record(before),
    }
    if config.outdir:
        plot_spectra(spectra, Path(config.outdir) / "ganfp_spectra.png")
        plot_examples(zoo, config, Path(config.outdir) / "ganfp_examples.png")
    _write_outputs(config, "ganfp_eval", figures, eval_markdown(figures))
    return figures


def summary_rows(figures: dict) -> list[list[str]]:
    """One row per method: mean unseen AP / Acc (± sd over seeds), then AP per family."""
    rows = []
    for method, s in figures["summary"].items():
        rows.append(
            [
                method,
                f"{s['unseen_ap']['mean']:.4f} ± {s['unseen_ap']['sd']:.4f}",
                f"{s['unseen_acc']['mean']:.4f} ± {s['unseen_acc']['sd']:.4f}",
                *(f"{s['families'][f]['ap']['mean']:.3f}" for f in s["families"]),
            ]
        )
    return rows


def summary_headers(figures: dict) -> list[str]:
    families = list(next(iter(figures["summary"].values()))["families"])
    trained, val = set(figures["train_families"]), figures["val_family"]
    tag = lambda f: f"{f} (train)" if f in trained else f"{f} (val)" if f == val else f
    return ["method", "unseen AP", "unseen Acc", *(f"AP {tag(f)}" for f in families)]


def eval_markdown(figures: dict) -> str:
    from frugal.scripts.report import markdown_table

    acc_rows = [
        [method, *(f"{s['families'][f]['acc']['mean']:.3f}" for f in s["families"])]
        for method, s in figures["summary"].items()
    ]
    families = list(next(iter(figures["summary"].values()))["families"])
    lines = [
        "# GAN-fingerprint detectors",
        "",
        f"Trained on {figures['train_families']}, checkpoint picked on {figures['val_family']!r}, "
        f"unseen: {figures['test_families']}; seeds {figures['seeds']} (mean ± sd over seeds).",
        "",
        markdown_table(summary_headers(figures), summary_rows(figures)),
        "",
        "Acc (logit 0) per family:",
        "",
        markdown_table(["method", *families], acc_rows),
        "",
        *_user_markdown(figures),
        markdown_table(
            ["claim", "this run", "verdict"], [[c["claim"], c["ours"], c["verdict"]] for c in figures["checks"]]
        ),
        "",
        zoo_markdown(figures["zoo"]).split("\n", 2)[2],
    ]
    return "\n".join(lines)


def _user_markdown(figures: dict) -> list[str]:
    from frugal.scripts.report import markdown_table

    gans = list(next(iter(figures["summary"].values()))["user"])
    if not gans:
        return []
    rows = [
        [method, *(f"{s['user'][g]['ap']['mean']:.3f} / {s['user'][g]['acc']['mean']:.3f}" for g in gans)]
        for method, s in figures["summary"].items()
    ]
    return ["Your test generators (`--test-root`), AP / Acc:", "", markdown_table(["method", *gans], rows), ""]
