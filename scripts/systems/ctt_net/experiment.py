"""The CTT-Net comparison: `data` (build and describe the eyes), `train` (one model on one fold) and
`cv` (every model, every fold, every seed, in the default setting and the controls).

Protocol (CTT-Net, arXiv 2212.05794; reference github.com/wjh892521292/Cataract_OCT): k-fold
cross-validation by eye; RMSE of the post-op VA, MAE of the gain, accuracy / precision / recall / F1
of "gain >= 0.2". Each seed re-draws the folds, the inner validation split, the backbones and the
heads, so the spread printed includes run-to-run variation. Two controls keep the comparison
honest: `both_views` (every lesion is seen by both scans, so routing information between views
should matter less) and `uninformative_pre` (the pre-op VA says nothing about the macula).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from frugal.scripts.systems.ctt_net import training
from frugal.scripts.systems.ctt_net.config import SETTINGS, CttConfig
from frugal.scripts.systems.ctt_net.eye_data import EyeSet, assign_folds, decimal_to_logmar
from frugal.scripts.systems.ctt_net.metrics import LOWER_IS_BETTER, METRICS, outcome_metrics

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_recipe(config: CttConfig, setting: str) -> dict:
    if config.data_csv is not None:
        path = Path(config.data_csv)
        return {
            "csv": str(path.resolve()),
            "mtime": path.stat().st_mtime if path.exists() else None,
            "image_root": config.image_root,
            "crop": list(config.image_crop),
            "shape": [config.sim.height, config.sim.width],
        }
    return {"simulator": dataclasses.asdict(config.simulator(setting))}


def load_eyes(config: CttConfig, setting: str = "default", progress: Progress = _quiet) -> EyeSet:
    """The eyes of one setting: the user's CSV, or the simulator (cached by recipe in cache_dir)."""
    if config.data_csv is not None:
        from frugal.scripts.systems.ctt_net.user_data import load_eye_csv

        return load_eye_csv(
            config.data_csv,
            config.image_root,
            image_shape=(config.sim.height, config.sim.width),
            crop=tuple(config.image_crop) or None,
        )
    from frugal.scripts.systems.ctt_net.simulator import simulate

    root = config.cache_root()
    path = None if root is None else root / f"eyes-{_key(data_recipe(config, setting))}.npz"
    if path is not None and path.exists():
        return EyeSet.load(path)
    progress(f"simulating {config.sim.eyes} eyes ({setting})")
    eyes = simulate(config.simulator(setting))
    if path is not None:
        eyes.save(path)
    return eyes


def describe(eyes: EyeSet) -> dict:
    """Marginals and couplings of an eye set (what the simulator is calibrated against)."""
    pre, post = decimal_to_logmar(eyes.pre_va), decimal_to_logmar(eyes.post_va)
    out = {
        "eyes": len(eyes),
        "image_shape": list(eyes.image_shape),
        "pre_logmar_mean": float(pre.mean()),
        "pre_logmar_sd": float(pre.std()),
        "post_logmar_mean": float(post.mean()),
        "post_logmar_sd": float(post.std()),
        "corr_pre_post_logmar": float(np.corrcoef(pre, post)[0, 1]),
        "effective_share": float(eyes.effective.mean()),
        # the trivial rule "every operation is effective": the F1 any classifier must beat
        "always_effective_f1": float(2 * eyes.effective.mean() / (1 + eyes.effective.mean())),
    }
    t = eyes.truth
    if {"damage_h_only", "damage_v_only", "damage_both", "damage_hidden"} <= set(t):
        parts = {k: float(np.sum(t[k])) for k in ("damage_h_only", "damage_v_only", "damage_both", "damage_hidden")}
        total = sum(parts.values()) or 1.0
        out["damage_share"] = {k.removeprefix("damage_"): v / total for k, v in parts.items()}
    return out


# --------------------------------------------------------------------------------------------
# One fold: backbones -> cached features -> heads


def fold_split(folds: np.ndarray, fold: int, validation_fraction: float, seed: int):
    test = np.flatnonzero(folds == fold)
    train, val = training.split_train_val(np.flatnonzero(folds != fold), validation_fraction, seed * 1000 + fold)
    return train, val, test


def feature_split(train: np.ndarray, backbone_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(eyes that train the backbones, eyes that train the heads). Features of eyes a backbone was
    fitted to are in-sample (it has partly memorized their labels), so heads trained on them learn to
    trust image features more than test eyes warrant; disjoint halves avoid that (stacking's
    cross-fitting rule). backbone_fraction 1: both on all training eyes."""
    if backbone_fraction >= 1:
        return train, train
    perm = train[np.random.default_rng(seed).permutation(len(train))]
    n = int(round(backbone_fraction * len(train)))
    if not 0 < n < len(train):
        raise ValueError(f"backbone_fraction={backbone_fraction} leaves no eyes for the backbones or the heads")
    return np.sort(perm[:n]), np.sort(perm[n:])


def fold_features(config: CttConfig, eyes: EyeSet, recipe: dict, train, val, *, seed: int, fold: int, progress):
    """Per-view backbone features of every eye (standardized with the training eyes' statistics),
    cached by recipe; plus the backbones' validation MSE."""
    settings = config.backbone_settings()
    root = config.cache_root()
    key = _key(
        {
            "data": recipe,
            "backbone": dataclasses.asdict(settings),
            "train": train.tolist()[:50],
            "n_train": len(train),
            "val": val.tolist()[:50],
            "seed": seed,
            "fold": fold,
        }
    )
    path = None if root is None else root / f"features-{key}.npz"
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as f:
            return (
                f["h"],
                f["v"],
                {
                    "val_mse_h": float(f["val_mse_h"]),
                    "val_mse_v": float(f["val_mse_v"]),
                    "seconds": 0.0,
                    "cached": True,
                },
            )
    feats, info = {}, {"seconds": 0.0, "cached": False}
    for view, images in (("h", eyes.horizontal), ("v", eyes.vertical)):
        progress(f"fold {fold} seed {seed}: backbone {view.upper()}")
        model, run = training.train_backbone(
            images,
            eyes.post_va,
            train,
            val,
            settings,
            seed=seed * 7919 + fold * 2 + (view == "v"),
            progress=config.progress,
            label=f"backbone {view}",
        )
        raw = training.extract_features(model, images)
        mean, std = raw[train].mean(0), raw[train].std(0) + 1e-6  # the backbone's own training eyes
        feats[view] = ((raw - mean) / std).astype(np.float32)
        info[f"val_mse_{view}"] = run["val_mse"]
        info["seconds"] += run["seconds"]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, h=feats["h"], v=feats["v"], val_mse_h=info["val_mse_h"], val_mse_v=info["val_mse_v"])
        tmp.replace(path)
    return feats["h"], feats["v"], info


def run_models(
    config: CttConfig, eyes: EyeSet, feat_h, feat_v, train, val, test, models, *, seed, fold, progress, all_train=None
):
    """Trains every model of `models` on one fold (heads on `train`, picked on `val`); returns result
    rows and the trained heads. `pre_only` needs no features, so it fits every training eyes
    (`all_train`, default train + val)."""
    rows, heads = [], {}
    hs = config.head_settings()
    fit = np.concatenate([train, val]) if all_train is None else np.union1d(all_train, val)
    for name in models:
        t0 = time.perf_counter()
        if name == "pre_only":
            predict = training.fit_pre_only(eyes.pre_va[fit], eyes.post_va[fit])
            pred, val_loss = predict(eyes.pre_va[test]), float("nan")
        else:
            progress(f"fold {fold} seed {seed}: {name}")
            head, info = training.train_head(
                name,
                feat_h,
                feat_v,
                eyes.pre_va,
                eyes.post_va,
                train,
                val,
                hs,
                seed=seed * 7919 + fold * 31 + 17,
                progress=config.progress,
            )
            heads[name] = head
            pred, val_loss = (
                training.predict_head(head, feat_h[test], feat_v[test], eyes.pre_va[test]),
                info["val_loss"],
            )
        rows.append(
            {
                "model": name,
                "fold": fold,
                "seed": seed,
                "val_loss": val_loss,
                "seconds": time.perf_counter() - t0,
                **outcome_metrics(pred, eyes.post_va[test], eyes.pre_va[test]),
            }
        )
    return rows, heads


# --------------------------------------------------------------------------------------------
# Summaries and the checks


def summarize(rows: list[dict]) -> dict:
    """Per model: mean over all (fold, seed) runs, the spread over folds (sd of the per-fold means
    over seeds) and over seeds (sd of the per-seed means over folds)."""
    out = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        entry = {"runs": len(mine)}
        for m in METRICS:
            values = np.array([r[m] for r in mine])
            by_fold = [np.mean([r[m] for r in mine if r["fold"] == f]) for f in sorted({r["fold"] for r in mine})]
            by_seed = [np.mean([r[m] for r in mine if r["seed"] == s]) for s in sorted({r["seed"] for r in mine})]
            entry[m] = {
                "mean": float(values.mean()),
                "fold_sd": float(np.std(by_fold, ddof=1)) if len(by_fold) > 1 else 0.0,
                "seed_sd": float(np.std(by_seed, ddof=1)) if len(by_seed) > 1 else 0.0,
                "per_seed": [float(v) for v in by_seed],
            }
        out[name] = entry
    return out


def best_of(summary: dict, names, metric: str) -> str:
    names = [n for n in names if n in summary]
    key = lambda n: summary[n][metric]["mean"]
    return min(names, key=key) if LOWER_IS_BETTER[metric] else max(names, key=key)


def paired_margin(rows: list[dict], model: str, other: str, metric: str) -> dict | None:
    """How much `model` beats `other` on `metric` (positive: better), paired run by run over the
    (fold, seed) runs both have: mean, standard error, runs."""
    sign = -1.0 if LOWER_IS_BETTER[metric] else 1.0
    mine = {(r["fold"], r["seed"]): r[metric] for r in rows if r["model"] == model}
    theirs = {(r["fold"], r["seed"]): r[metric] for r in rows if r["model"] == other}
    diffs = np.array([sign * (mine[k] - theirs[k]) for k in mine if k in theirs])
    if len(diffs) == 0:
        return None
    se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("inf")
    return {"mean": float(diffs.mean()), "se": se, "runs": len(diffs)}


def verdict(mean: float, se: float) -> str:
    """'holds' only when the paired margin is positive by more than two standard errors,
    'does not hold' when it is negative by as much, 'within noise' in between."""
    if mean > 2 * se:
        return "holds"
    if mean < -2 * se:
        return "does not hold"
    return "within noise"


def _check(claim: str, ours: str, mean: float, se: float) -> dict:
    v = verdict(mean, se)
    return {"claim": claim, "ours": ours, "margin": mean, "se": se, "verdict": v, "holds": v == "holds"}


def checks(results: dict) -> list[dict]:
    """The issue's claims, each with the paired margin it rests on (runs = folds x seeds)."""
    out = []
    default = results.get("default", {})
    summary, rows = default.get("summary", {}), default.get("rows", [])
    baselines = [n for n in training.BASELINES if n in summary]
    if "ctt" in summary and baselines:
        for metric in ("rmse", "f1"):
            best = best_of(summary, baselines, metric)
            m = paired_margin(rows, "ctt", best, metric)
            ctt, other = summary["ctt"][metric], summary[best][metric]
            out.append(
                _check(
                    f"CTT-Net has the best mean {metric.upper()} among the baselines (default setting)",
                    f"CTT {ctt['mean']:.4f} vs best baseline {best} {other['mean']:.4f}; paired margin "
                    f"{m['mean']:+.4f} ± {m['se']:.4f} (SE, {m['runs']} runs)",
                    m["mean"],
                    m["se"],
                )
            )
    e2e = default.get("end_to_end", {})
    others = [n for n in e2e.get("summary", {}) if n != "ctt"]
    if "ctt" in e2e.get("summary", {}) and others:
        for metric in ("rmse", "f1"):
            best = best_of(e2e["summary"], others, metric)
            m = paired_margin(e2e["rows"], "ctt", best, metric)
            out.append(
                _check(
                    f"end to end, CTT-Net has the best mean {metric.upper()} (default setting)",
                    f"CTT {e2e['summary']['ctt'][metric]['mean']:.4f} vs {best} "
                    f"{e2e['summary'][best][metric]['mean']:.4f}; paired margin {m['mean']:+.4f} ± {m['se']:.4f} "
                    f"(SE, {m['runs']} runs)",
                    m["mean"],
                    m["se"],
                )
            )
    for setting, rival, what in (
        ("both_views", "late_pre", "late fusion (+pre-op VA) shrinks when both scans see every lesion"),
        ("uninformative_pre", "late", "late fusion without pre-op VA shrinks when pre-op VA is uninformative"),
    ):
        control = results.get(setting, {})
        before = paired_margin(rows, "ctt", rival, "rmse")
        after = paired_margin(control.get("rows", []), "ctt", rival, "rmse")
        if before is None or after is None:
            continue
        out.append(
            _check(
                f"CTT-Net's RMSE margin over {what}",
                f"margin {before['mean']:+.4f} ± {before['se']:.4f} (default) -> "
                f"{after['mean']:+.4f} ± {after['se']:.4f} ({setting})",
                before["mean"] - after["mean"],
                float(np.hypot(before["se"], after["se"])),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# The analysis: attention flow and which view a model leans on


def view_reliance(head, feat_h, feat_v, pre, truth: dict, index) -> dict | None:
    """Occlusion: how much the prediction moves when one view's features are replaced by the
    training mean (zero after standardization), for eyes whose lesion damage is seen by only the
    horizontal scan and for those seen by only the vertical one (the simulator's truth)."""
    if not {"damage_h_only", "damage_v_only"} <= set(truth):
        return None
    dh, dv = truth["damage_h_only"][index], truth["damage_v_only"][index]
    groups = {"h_only": index[(dh > 0.05) & (dv < 0.01)], "v_only": index[(dv > 0.05) & (dh < 0.01)]}
    out = {}
    for group, idx in groups.items():
        if len(idx) < 3:
            continue
        base = training.predict_head(head, feat_h[idx], feat_v[idx], pre[idx])
        zero = np.zeros_like(feat_h[idx])
        moved_h = np.abs(base - training.predict_head(head, zero, feat_v[idx], pre[idx])).mean()
        moved_v = np.abs(base - training.predict_head(head, feat_h[idx], zero, pre[idx])).mean()
        out[group] = {"eyes": len(idx), "occlude_h": float(moved_h), "occlude_v": float(moved_v)}
    if len(out) == 2:
        out["leans_on_the_view_that_shows_it"] = bool(
            out["h_only"]["occlude_h"] > out["h_only"]["occlude_v"]
            and out["v_only"]["occlude_v"] > out["v_only"]["occlude_h"]
        )
    return out


def attention_flow(heads: dict, feat_h, feat_v, pre, index) -> dict:
    from frugal.models.ctt_net import CTT_TOKENS

    out = {}
    for name in ("ctt", "full_attention"):
        if name in heads:
            flow = training.attention_maps(heads[name], feat_h[index], feat_v[index], pre[index])
            out[name] = {"tokens": list(CTT_TOKENS), "matrix": flow.round(4).tolist()}
    return out


def plot_attention_flow(flow: dict, path: Path) -> Path:
    from frugal.scripts.report import new_figure, save_figure

    names = list(flow)
    fig, axes = new_figure(1, len(names), figsize=(5.4 * len(names), 4.2), squeeze=False)
    fig.subplots_adjust(wspace=0.45)
    for ax, name in zip(axes[0], names):
        matrix = np.asarray(flow[name]["matrix"])
        ax.imshow(matrix, vmin=0, vmax=max(0.5, matrix.max()), cmap="viridis")
        labels = flow[name]["tokens"]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("token read (key)")
        ax.set_ylabel("token reading (query)")
        ax.set_title({"ctt": "CTT-Net", "full_attention": "full attention"}.get(name, name))
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Commands


def run_data(config: CttConfig, progress: Progress = _quiet) -> dict:
    """Builds (or loads) the eyes of every setting, describes them and draws example scans."""
    from frugal.scripts.report import machine_description, machine_record

    before = machine_description()
    figures = {"settings": {}}
    for setting in config.settings:
        eyes = load_eyes(config, setting, progress)
        figures["settings"][setting] = {"description": SETTINGS.get(setting, "user data"), **describe(eyes)}
        if config.outdir and setting == config.settings[0] and config.data_csv is None:
            from frugal.scripts.systems.ctt_net.simulator import plot_examples

            figures["examples_plot"] = str(plot_examples(eyes, Path(config.outdir) / "ctt_data_examples.png"))
    figures["machine"] = machine_record(before)
    if config.outdir:
        from frugal.scripts.report import write_json

        write_json(Path(config.outdir) / "ctt_data.json", figures)
    return figures


def run_train(config: CttConfig, progress: Progress = _quiet) -> dict:
    """One model on one fold (the first seed, the first setting): its test figures and curve."""
    from frugal.scripts.report import machine_description, machine_record

    before = machine_description()
    setting, seed, fold = config.settings[0], config.seeds[0], config.test_fold
    eyes = load_eyes(config, setting, progress)
    folds = assign_folds(eyes, config.folds, seed)
    train, val, test = fold_split(folds, fold, config.validation_fraction, seed)
    b_train, h_train = feature_split(train, config.backbone_fraction, seed * 1000 + fold + 1)
    feat_h, feat_v, finfo = fold_features(
        config, eyes, data_recipe(config, setting), b_train, val, seed=seed, fold=fold, progress=progress
    )
    rows, _ = run_models(
        config,
        eyes,
        feat_h,
        feat_v,
        h_train,
        val,
        test,
        [config.train_model],
        seed=seed,
        fold=fold,
        progress=progress,
        all_train=train,
    )
    figures = {
        "setting": setting,
        "model": config.train_model,
        "fold": fold,
        "seed": seed,
        "features": finfo,
        "result": rows[0],
    }
    if config.train_model in config.end_to_end:
        figures["end_to_end"] = _end_to_end_fold(config, eyes, config.train_model, train, val, test, seed, fold)
    figures["machine"] = machine_record(before)
    if config.outdir:
        from frugal.scripts.report import write_json

        write_json(Path(config.outdir) / f"ctt_train_{config.train_model}.json", figures)
    return figures


def _end_to_end_fold(config, eyes, name, train, val, test, seed, fold) -> dict:
    t0 = time.perf_counter()
    model, info = training.train_end_to_end(
        name,
        eyes.horizontal,
        eyes.vertical,
        eyes.pre_va,
        eyes.post_va,
        train,
        val,
        config.backbone_settings(),
        config.head_settings(),
        steps=config.e2e_steps,
        batch_size=config.e2e_batch,
        learning_rate=config.e2e_lr,
        seed=seed * 7919 + fold,
        progress=config.progress,
    )
    pred = training.predict_end_to_end(model, eyes.horizontal[test], eyes.vertical[test], eyes.pre_va[test])
    return {
        "model": name,
        "fold": fold,
        "seed": seed,
        "val_loss": info["val_loss"],
        "seconds": time.perf_counter() - t0,
        **outcome_metrics(pred, eyes.post_va[test], eyes.pre_va[test]),
    }


def run_cv(config: CttConfig, progress: Progress = _quiet) -> dict:
    """The whole comparison; writes ctt_cv.{json,md} and the attention-flow plot when outdir is set."""
    from frugal.scripts.report import machine_description

    before = machine_description()
    t_start = time.perf_counter()
    results, analysis = {}, {}
    for setting in config.settings:
        eyes = load_eyes(config, setting, progress)
        recipe = data_recipe(config, setting)
        models = config.models if setting == "default" else config.control_models
        rows, backbones = [], []
        for seed in config.seeds:
            folds = assign_folds(eyes, config.folds, seed)
            for fold in range(config.folds):
                train, val, test = fold_split(folds, fold, config.validation_fraction, seed)
                b_train, h_train = feature_split(train, config.backbone_fraction, seed * 1000 + fold + 1)
                feat_h, feat_v, finfo = fold_features(
                    config, eyes, recipe, b_train, val, seed=seed, fold=fold, progress=progress
                )
                backbones.append({"fold": fold, "seed": seed, **finfo})
                fold_rows, heads = run_models(
                    config,
                    eyes,
                    feat_h,
                    feat_v,
                    h_train,
                    val,
                    test,
                    models,
                    seed=seed,
                    fold=fold,
                    progress=progress,
                    all_train=train,
                )
                rows += fold_rows
                if setting == "default" and seed == config.seeds[0] and fold == 0:
                    analysis["attention_flow"] = attention_flow(heads, feat_h, feat_v, eyes.pre_va, test)
                    analysis["view_reliance"] = {
                        name: view_reliance(heads[name], feat_h, feat_v, eyes.pre_va, eyes.truth, test)
                        for name in ("ctt", "full_attention", "late_pre")
                        if name in heads
                    }
        results[setting] = {"data": describe(eyes), "rows": rows, "summary": summarize(rows), "backbones": backbones}
        figures = _cv_figures(config, results, analysis, t_start, before)
        if config.outdir:  # a partial report after each setting: a long run shows what it has
            write_cv_report(figures, Path(config.outdir))
    if config.end_to_end and "default" in results:
        eyes = load_eyes(config, "default", progress)
        e2e = []
        for seed in config.seeds:
            folds = assign_folds(eyes, config.folds, seed)
            for name in config.end_to_end:
                for fold in range(config.folds):
                    progress(f"end to end: {name}, fold {fold}, seed {seed}")
                    train, val, test = fold_split(folds, fold, config.validation_fraction, seed)
                    e2e.append(_end_to_end_fold(config, eyes, name, train, val, test, seed, fold))
        results["default"]["end_to_end"] = {"rows": e2e, "summary": summarize(e2e)}
    figures = _cv_figures(config, results, analysis, t_start, before)
    if config.outdir:
        write_cv_report(figures, Path(config.outdir))
    return figures


def _cv_figures(config, results, analysis, t_start, before) -> dict:
    from frugal.scripts.report import machine_record

    return {
        "config": dataclasses.asdict(config),
        "results": results,
        "analysis": analysis,
        "checks": checks(results),
        "seconds": time.perf_counter() - t_start,
        "machine": machine_record(before),
    }


def _cell(entry: dict) -> str:
    return f"{entry['mean']:.3f} ± {entry['fold_sd']:.3f}"


def summary_rows(summary: dict) -> list[list[str]]:
    return [[name, training.MODELS[name][0]] + [_cell(s[m]) for m in METRICS] for name, s in summary.items()]


def cv_markdown(figures: dict) -> str:
    from frugal.scripts.report import machine_text, markdown_table

    cfg = figures["config"]
    lines = [
        "# CTT-Net: cross-validated comparison",
        "",
        f"{cfg['folds']}-fold CV by eye, seeds {cfg['seeds']}; cells are mean ± sd over folds "
        "(per-fold means over seeds). Decimal VA; RMSE of post-op VA, MAE of the gain, and the "
        "'gain >= 0.2' call. Machine: " + machine_text(figures["machine"]) + f"; {figures['seconds']:.0f} s in all.",
        "",
    ]
    header = ["model", "what", *METRICS]
    for setting, res in figures["results"].items():
        d = res["data"]
        lines += [
            f"## Setting `{setting}`: {SETTINGS.get(setting, 'user data')}",
            "",
            f"{d['eyes']} eyes; pre-op logMAR {d['pre_logmar_mean']:.2f} ± {d['pre_logmar_sd']:.2f}, post-op "
            f"{d['post_logmar_mean']:.2f} ± {d['post_logmar_sd']:.2f}; effective share {d['effective_share']:.2f} "
            f"(calling every operation effective scores F1 {d['always_effective_f1']:.3f}).",
            "",
            markdown_table(header, summary_rows(res["summary"])),
            "",
        ]
        if "end_to_end" in res:
            lines += [
                "End to end (backbones + head, every seed):",
                "",
                markdown_table(header, summary_rows(res["end_to_end"]["summary"])),
                "",
            ]
    lines += [
        "## Checks",
        "",
        "A claim holds when its paired margin (run by run over folds x seeds) exceeds two standard errors.",
        "",
        markdown_table(
            ["claim", "this run", "verdict"], [[c["claim"], c["ours"], c["verdict"]] for c in figures["checks"]]
        ),
        "",
    ]
    reliance = figures["analysis"].get("view_reliance") or {}
    rows = []
    for name, r in reliance.items():
        if r and "h_only" in r and "v_only" in r:
            rows.append(
                [
                    name,
                    f"{r['h_only']['occlude_h']:.4f} / {r['h_only']['occlude_v']:.4f}",
                    f"{r['v_only']['occlude_h']:.4f} / {r['v_only']['occlude_v']:.4f}",
                    "yes" if r["leans_on_the_view_that_shows_it"] else "no",
                ]
            )
    if rows:
        lines += [
            "## Which view does a model lean on? (default setting, seed 0, fold 0)",
            "",
            "Mean |change of the prediction| when one view's features are occluded, for test eyes whose "
            "lesion damage only the horizontal (H-only) or only the vertical (V-only) scan shows.",
            "",
            markdown_table(
                [
                    "model",
                    "H-only eyes: occlude H / V",
                    "V-only eyes: occlude H / V",
                    "leans on the view that shows the lesion",
                ],
                rows,
            ),
            "",
        ]
    if figures["analysis"].get("attention_flow"):
        lines += ["## Attention flow", "", "![attention flow](ctt_attention_flow.png)", ""]
    return "\n".join(lines)


def write_cv_report(figures: dict, outdir: Path) -> None:
    from frugal.scripts.report import write_json

    outdir.mkdir(parents=True, exist_ok=True)
    if figures["analysis"].get("attention_flow"):
        plot_attention_flow(figures["analysis"]["attention_flow"], outdir / "ctt_attention_flow.png")
    write_json(outdir / "ctt_cv.json", figures)
    (outdir / "ctt_cv.md").write_text(cv_markdown(figures) + "\n")
