"""The CTT-Net protocol: eye sets and folds, summaries and checks, head training, view reliance,
and the `frugal ctt` commands at the quick preset."""

import json

import numpy as np
import pytest
from PIL import Image

from frugal.scripts.systems.ctt_net import experiment, training
from frugal.scripts.systems.ctt_net.eye_data import EyeSet, assign_folds, decimal_to_logmar, logmar_to_decimal


def _eyes(n=40, seed=0, folds=None):
    rng = np.random.default_rng(seed)
    pre = rng.uniform(0.05, 0.8, n).astype(np.float32)
    post = np.clip(pre + rng.normal(0.3, 0.2, n), 0.01, 1.5).astype(np.float32)
    images = rng.uniform(size=(n, 16, 24)).astype(np.float32)
    ids = np.array([f"e{i:03d}" for i in range(n)])
    return EyeSet(images, images[:, ::-1].copy(), pre, post, ids, folds, {"cataract": rng.uniform(size=n)}, "test")


def test_eye_set_round_trip_and_validation(tmp_path):
    eyes = _eyes()
    back = EyeSet.load(eyes.save(tmp_path / "eyes.npz"))
    for field in ("horizontal", "vertical", "pre_va", "post_va", "eye_ids"):
        np.testing.assert_array_equal(getattr(back, field), getattr(eyes, field))
    np.testing.assert_array_equal(back.truth["cataract"], eyes.truth["cataract"])
    assert back.folds is None and back.source == "test"
    with pytest.raises(ValueError, match="unique"):
        EyeSet(eyes.horizontal[:2], eyes.vertical[:2], eyes.pre_va[:2], eyes.post_va[:2], np.array(["a", "a"]))
    with pytest.raises(ValueError, match="post_va must be decimal VA"):
        EyeSet(eyes.horizontal[:1], eyes.vertical[:1], eyes.pre_va[:1], np.array([2.0], np.float32), np.array(["a"]))
    np.testing.assert_allclose(logmar_to_decimal([0.0, 0.3, 3.0]), [1.0, 10**-0.3, 0.01], rtol=1e-6)
    np.testing.assert_allclose(decimal_to_logmar(logmar_to_decimal([0.1, 0.7])), [0.1, 0.7], rtol=1e-5)


def test_folds_are_stratified_seeded_and_respect_the_sources_own():
    eyes = _eyes(n=80)
    folds = assign_folds(eyes, 4, seed=3)
    np.testing.assert_array_equal(folds, assign_folds(eyes, 4, seed=3))
    assert not np.array_equal(folds, assign_folds(eyes, 4, seed=4))
    for f in range(4):
        in_fold = eyes.effective[folds == f]
        assert 0 < in_fold.mean() < 1 and abs(len(in_fold) - 20) <= 2
    own = _eyes(n=12, folds=np.array([5, 7, 9] * 4))
    np.testing.assert_array_equal(assign_folds(own, 3, seed=0), [0, 1, 2] * 4)
    with pytest.raises(ValueError, match="defines 3 folds"):
        assign_folds(own, 4, seed=0)


def test_summary_spreads_and_checks():
    rows = []
    for seed in (0, 1):
        for fold in (0, 1):
            for name, base in (("ctt", 0.20), ("late_pre", 0.25), ("pre_only", 0.30)):
                value = base + 0.01 * fold + 0.002 * seed + (0.002 * (fold - seed) if name == "ctt" else 0)
                rows.append(
                    {
                        "model": name,
                        "fold": fold,
                        "seed": seed,
                        "rmse": value,
                        "mae_gain": value,
                        "accuracy": 0.8,
                        "precision": 0.8,
                        "recall": 0.8,
                        "f1": 0.9 - value,
                    }
                )
    summary = experiment.summarize(rows)
    ctt = summary["ctt"]["rmse"]
    per_run = {(f, s_): 0.20 + 0.01 * f + 0.002 * s_ + 0.002 * (f - s_) for f in (0, 1) for s_ in (0, 1)}
    assert ctt["mean"] == pytest.approx(np.mean(list(per_run.values())))
    by_fold = [np.mean([per_run[(f, s_)] for s_ in (0, 1)]) for f in (0, 1)]
    by_seed = [np.mean([per_run[(f, s_)] for f in (0, 1)]) for s_ in (0, 1)]
    assert ctt["fold_sd"] == pytest.approx(np.std(by_fold, ddof=1))
    assert ctt["seed_sd"] == pytest.approx(np.std(by_seed, ddof=1))
    # ctt beats late_pre by 0.05 RMSE in every run (paired noise 0.002): holds; F1 likewise
    default = {"summary": summary, "rows": rows}
    found = {c["claim"]: c for c in experiment.checks({"default": default})}
    rmse = found["CTT-Net has the best mean RMSE among the baselines (default setting)"]
    assert rmse["verdict"] == "holds" and rmse["margin"] == pytest.approx(0.05)
    # end to end (CTT-Net against late fusion there): the same paired margin, its own claims
    e2e_rows = [r for r in rows if r["model"] != "pre_only"]
    with_e2e = {**default, "end_to_end": {"rows": e2e_rows, "summary": experiment.summarize(e2e_rows)}}
    found = {c["claim"]: c for c in experiment.checks({"default": with_e2e})}
    e2e = found["end to end, CTT-Net has the best mean RMSE (default setting)"]
    assert e2e["verdict"] == "holds" and e2e["margin"] == pytest.approx(0.05) and "late_pre" in e2e["ours"]
    # the both-views control: the margin drops from 0.05 to 0.01 -> the shrink holds
    both_rows = [dict(r, rmse=r["rmse"] + (0.04 if r["model"] == "ctt" else 0)) for r in rows]
    found = experiment.checks({"default": default, "both_views": {"rows": both_rows}})
    shrink = [c for c in found if "both scans" in c["claim"]][0]
    assert shrink["verdict"] == "holds" and shrink["margin"] == pytest.approx(0.04)
    # a margin inside two standard errors is called noise, a clear loss "does not hold"
    assert experiment.verdict(0.01, 0.006) == "within noise"
    assert experiment.verdict(-0.02, 0.006) == "does not hold"
    m = experiment.paired_margin(
        [
            {"model": a, "fold": f, "seed": 0, "rmse": v}
            for a, f, v in (("x", 0, 0.2), ("y", 0, 0.3), ("x", 1, 0.2), ("y", 1, 0.1))
        ],
        "x",
        "y",
        "rmse",
    )
    assert m["mean"] == pytest.approx(0.0) and m["se"] == pytest.approx(np.std([0.1, -0.1], ddof=1) / np.sqrt(2))


def test_a_head_learns_a_two_view_signal_and_beats_pre_op_va_alone():
    rng = np.random.default_rng(0)
    n = 400
    feat_h, feat_v = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)
    pre = rng.uniform(0.05, 0.6, n).astype(np.float32)
    post = np.clip(0.7 + 0.3 * np.tanh(feat_h[:, 0] - feat_v[:, 1]), 0.01, 1.5).astype(np.float32)
    train, val = training.split_train_val(np.arange(300), 0.15, seed=0)
    test = np.arange(300, n)
    settings = training.HeadSettings(dim=16, steps=300, batch_size=32, learning_rate=3e-3, eval_every=50)
    head, info = training.train_head("late_pre", feat_h, feat_v, pre, post, train, val, settings, seed=0)
    rmse = np.sqrt(np.mean((training.predict_head(head, feat_h[test], feat_v[test], pre[test]) - post[test]) ** 2))
    pre_only = training.fit_pre_only(pre[:300], post[:300])(pre[test])
    assert rmse < 0.6 * np.sqrt(np.mean((pre_only - post[test]) ** 2))
    assert info["val_loss"] == min(h["val_loss"] for h in info["history"] if "val_loss" in h)


def test_view_reliance_sees_a_model_that_ignores_the_vertical_scan():
    from flax import nnx

    from frugal.models.ctt_net import SingleViewHead

    rng = np.random.default_rng(1)
    n = 60
    feat_h, feat_v = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)
    pre = rng.uniform(0.05, 0.6, n).astype(np.float32)
    head = SingleViewHead(8, view="h", dim=8, rngs=nnx.Rngs(0))
    head.eval()
    truth = {"damage_h_only": np.repeat([0.3, 0.0], n // 2), "damage_v_only": np.repeat([0.0, 0.3], n // 2)}
    result = experiment.view_reliance(head, feat_h, feat_v, pre, truth, np.arange(n))
    assert result["h_only"]["occlude_v"] == 0 and result["v_only"]["occlude_v"] == 0
    assert result["h_only"]["occlude_h"] > 0 and result["leans_on_the_view_that_shows_it"] is False
    assert experiment.view_reliance(head, feat_h, feat_v, pre, {}, np.arange(n)) is None


def test_cv_and_data_commands_at_the_quick_preset(tmp_path):
    from frugal.scripts.cli import main

    out = tmp_path / "cv"
    args = ["ctt", "cv", "--preset", "quick", "--settings", "default", "--models", "pre_only", "single_h", "ctt"]
    # end to end: CTT-Net only (late fusion end to end runs in the user-CSV test; the end-to-end claims
    # are checked on hand-built rows in test_summary_spreads_and_checks)
    assert main(args + ["--end-to-end", "ctt", "--outdir", str(out)]) == 0
    figures = json.loads((out / "ctt_cv.json").read_text())
    summary = figures["results"]["default"]["summary"]
    assert set(summary) == {"pre_only", "single_h", "ctt"}
    assert summary["ctt"]["runs"] == 2 and 0 < summary["ctt"]["rmse"]["mean"] < 1.5
    e2e = figures["results"]["default"]["end_to_end"]
    assert {(r["model"], r["fold"], r["seed"]) for r in e2e["rows"]} == {("ctt", f, 0) for f in (0, 1)}
    claims = [c["claim"] for c in figures["checks"]]
    # no end-to-end rival, no end-to-end claim
    assert [c.startswith("CTT-Net has the best mean") for c in claims] == [True, True]
    flow = np.asarray(figures["analysis"]["attention_flow"]["ctt"]["matrix"])
    assert flow[0, 2] == 0 and (out / "ctt_attention_flow.png").stat().st_size > 0
    assert "## Checks" in (out / "ctt_cv.md").read_text()
    data_out = tmp_path / "data"
    assert main(["ctt", "data", "--preset", "quick", "--settings", "default", "--outdir", str(data_out)]) == 0
    described = json.loads((data_out / "ctt_data.json").read_text())["settings"]["default"]
    assert described["eyes"] == 64 and (data_out / "ctt_data_examples.png").exists()


def test_command_errors_name_the_flag(tmp_path, capsys):
    from frugal.scripts.cli import main

    csv = tmp_path / "eyes.csv"
    csv.write_text("eye_id,view,image,pre_va,post_va\n")
    assert main(["ctt", "cv", "--preset", "quick", "--data-csv", str(csv), "--outdir", str(tmp_path)]) == 2
    assert "--settings default" in capsys.readouterr().err
    assert main(["ctt", "data", "--preset", "quick", "--image-root", str(tmp_path)]) == 2
    assert "--data-csv" in capsys.readouterr().err
    assert main(["ctt", "train", "--preset", "quick", "--test-fold", "5"]) == 2
    assert "test_fold" in capsys.readouterr().err
    args = ["ctt", "train", "--preset", "quick", "--settings", "default", "--data-csv", str(csv)]
    assert main(args + ["--image-crop", "1", "2"]) == 2
    assert "image_crop" in capsys.readouterr().err
    # a flag the chosen command never reads is refused, not ignored
    for argv in (["ctt", "cv", "--train-model", "ctt"], ["ctt", "data", "--head-steps", "5"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def test_train_command_on_a_users_csv(tmp_path):
    """A user's own eyes (PNG scans + CSV) through `frugal ctt train`, frozen features and end to end."""
    from frugal.scripts.cli import main

    rng = np.random.default_rng(0)
    lines = ["eye_id,view,image,pre_va,post_va"]
    for i in range(24):
        pre, post = f"{rng.uniform(0.05, 0.5):.2f}", f"{rng.uniform(0.3, 1.2):.2f}"
        for view in ("H", "V"):
            Image.fromarray((rng.uniform(size=(40, 80)) * 255).astype(np.uint8)).save(tmp_path / f"{i}{view}.png")
            lines.append(f"eye{i},{view},{i}{view}.png,{pre},{post}")
    (tmp_path / "eyes.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["ctt", "train", "--preset", "quick", "--settings", "default", "--data-csv", str(tmp_path / "eyes.csv")]
    args += ["--train-model", "late_pre", "--end-to-end", "late_pre", "--outdir", str(out)]
    args += ["--image-crop", "0", "0", "80", "40"]
    assert main(args) == 0
    figures = json.loads((out / "ctt_train_late_pre.json").read_text())
    assert figures["result"]["model"] == "late_pre" and figures["end_to_end"]["model"] == "late_pre"
    assert 0 <= figures["result"]["accuracy"] <= 1


def test_backbones_and_heads_train_on_disjoint_eyes():
    train = np.arange(10, 110)
    b, h = experiment.feature_split(train, 0.5, seed=0)
    assert len(b) == len(h) == 50 and not set(b) & set(h) and set(b) | set(h) == set(train)
    np.testing.assert_array_equal(experiment.feature_split(train, 0.5, seed=0)[0], b)
    same_b, same_h = experiment.feature_split(train, 1.0, seed=0)
    np.testing.assert_array_equal(same_b, train)
    np.testing.assert_array_equal(same_h, train)
    with pytest.raises(ValueError, match="backbone_fraction"):
        experiment.feature_split(train[:1], 0.5, seed=0)


def test_batched_prediction_pads_chunks_to_a_few_shapes_and_drops_the_padding():
    """Chunks are zero-padded to powers of two (so folds share compiled shapes); the rows returned are
    exactly fn of the real rows, in order."""
    seen = []

    def fn(model, a, b):
        seen.append(a.shape[0])
        return a.sum(axis=1) * model + b

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(203, 3)).astype(np.float32), rng.normal(size=203).astype(np.float32)
    out = training._batched(fn, 2.0, (a, b), batch_size=64)
    np.testing.assert_allclose(out, a.sum(axis=1) * 2.0 + b, rtol=1e-6)
    assert seen == [64, 64, 64, 16]  # 203 = 3 x 64 + 11, the last chunk padded to 16
    seen.clear()
    assert training._batched(fn, 1.0, (a[:5], b[:5]), batch_size=64).shape == (5,) and seen == [8]


def test_end_to_end_flag_with_no_value_turns_the_presets_end_to_end_runs_off():
    import argparse

    from frugal.scripts.configs import add_config_flags, config_from_flags
    from frugal.scripts.systems.ctt_net.config import PRESETS, CttConfig

    assert PRESETS["full"].end_to_end == ("ctt", "late_pre")
    parser = argparse.ArgumentParser()
    add_config_flags(parser, CttConfig)
    for argv, expected in ((["--end-to-end"], ()), (["--end-to-end", "ctt"], ("ctt",)), ([], ("ctt", "late_pre"))):
        config = config_from_flags(parser.parse_args(argv), CttConfig, PRESETS)
        assert config.end_to_end == expected


def test_compiled_attention_maps_equal_the_eager_ones_in_eval_mode():
    from flax import nnx

    rng = np.random.default_rng(0)
    h, v = rng.normal(size=(2, 6, 12)).astype(np.float32)
    pre = rng.uniform(0.05, 1.2, 6).astype(np.float32)
    for name in ("ctt", "full_attention"):
        head = training.make_head(name, 12, training.HeadSettings(dim=16, rounds=2), nnx.Rngs(0))
        head.eval()
        eager = np.asarray(head.attention_maps(h, v, pre))
        head.train()  # the compiled path switches to eval itself (dropout off)
        np.testing.assert_allclose(training.attention_maps(head, h, v, pre), eager, rtol=1e-5, atol=1e-6)
