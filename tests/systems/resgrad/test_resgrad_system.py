"""ResGrad's system layer: config checks, normalization and batching against loops, the refiners'
targets, a killed FastSpeech 2 run resuming, and `frugal tts eval` / `synthesize` at the quick preset."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from frugal.scripts.systems.resgrad import training
from frugal.scripts.systems.resgrad.config import PRESETS, ResGradConfig
from frugal.scripts.systems.resgrad.corpus import Utterance


def _utterance(i: int, frames_per_phoneme=(3, 0, 5, 2), voiced=True, seed=0) -> Utterance:
    rng = np.random.default_rng([seed, i])
    durations = np.asarray(frames_per_phoneme, np.int32)
    t = int(durations.sum())
    f0 = np.where(rng.random(t) < 0.7, rng.uniform(80, 160, t), 0.0) if voiced else np.zeros(t)
    return Utterance(
        id=f"u{i}",
        split="train",
        text="x",
        phonemes="x",
        phoneme_ids=rng.integers(0, 150, len(durations)).astype(np.int32),
        durations=durations,
        mel=rng.normal(-5, 2, (t, 80)).astype(np.float32),
        f0=f0.astype(np.float32),
        energy=rng.uniform(0.1, 5, t).astype(np.float32),
    )


@pytest.mark.parametrize(
    "change, match",
    [
        ({"train_sentences": 0}, "train_sentences must be >= 1"),
        ({"test_sentences": 201}, "test_sentences must be <= 200"),
        ({"sample_steps": (1, 200)}, "sample_steps"),
        ({"resgrad_steps": 3}, "resgrad_steps=3 must be one of"),
        ({"shallow_k": 100}, "shallow_k"),
        ({"segment_frames": 20}, "segment_frames"),
        ({"noise_scale": -1.0}, "noise_scale"),
    ],
)
def test_config_refuses_bad_values(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(ResGradConfig(), **change)


def test_stats_and_phoneme_targets_match_a_loop():
    utts = [_utterance(i, (3 + i, 0, 5, 2 + 2 * i)) for i in range(4)]
    stats = training.compute_stats(utts)
    np.testing.assert_allclose(stats.mel_mean, np.concatenate([u.mel for u in utts]).mean(0), rtol=1e-5)
    u = utts[1]
    pitch, energy = training.phoneme_targets(u, stats)
    # Loop reference: interpolate unvoiced frames, average log F0 per phoneme, z-score.
    f0 = u.f0.astype(np.float64).copy()
    voiced = np.flatnonzero(f0 > 0)
    f0 = np.interp(np.arange(len(f0)), voiced, f0[voiced])
    start = 0
    for p, d in enumerate(u.durations):
        if d == 0:
            assert pitch[p] == 0.0 and energy[p] == pytest.approx((0 - stats.energy_mean) / stats.energy_std)
            continue
        want = (np.log(f0[start : start + d]).mean() - stats.pitch_mean) / stats.pitch_std
        assert pitch[p] == pytest.approx(want, rel=1e-4, abs=1e-5)
        e = (u.energy[start : start + d].mean() - stats.energy_mean) / stats.energy_std
        assert energy[p] == pytest.approx(e, rel=1e-4, abs=1e-5)
        start += d
    lo, hi = stats.pitch_range
    assert lo < 0 < hi


def test_buckets_hold_every_utterance_once_with_consistent_masks():
    utts = [_utterance(i, tuple(range(1, 3 + i))) for i in range(7)]
    stats = training.compute_stats(utts)
    sets = training.buckets(utts, stats, count=3)
    assert len(sets) == 3 and sorted(np.concatenate([s.index for s in sets]).tolist()) == list(range(7))
    for s in sets:
        assert s.mel.shape[1] % 16 == 0 and s.phonemes.shape[1] % 16 == 0
        for row, i in enumerate(s.index):
            u = utts[i]
            assert s.frame_mask[row].sum() == u.mel.shape[0] == s.durations[row].sum()
            np.testing.assert_array_equal(s.mel[row, : u.mel.shape[0]], u.mel)
            np.testing.assert_array_equal(s.phonemes[row, : len(u.phoneme_ids)], u.phoneme_ids)
    with pytest.raises(ValueError, match="count"):
        training.buckets(utts, stats, count=0)


def test_refiner_targets_invert_and_segments_are_a_function_of_the_step():
    utts = [_utterance(i, (40, 30 + 10 * i)) for i in range(3)]
    stats = training.compute_stats(utts)
    stats.residual_std = np.full(80, 0.5, np.float32)
    gt, base = utts[0].mel, utts[0].mel + 0.3
    for kind in training.REFINERS:
        target = training.refiner_target(kind, gt, base, stats)
        np.testing.assert_allclose(training.refiner_output(kind, target, base, stats), gt, atol=1e-4)
    np.testing.assert_allclose(training.refiner_target("resgrad", gt, base, stats), -0.6, atol=1e-5)
    with pytest.raises(ValueError, match="refiner must be one of"):
        training.refiner_target("mel", gt, base, stats)
    conds = [u.mel for u in utts]
    targets = [u.mel * 2 for u in utts]
    batch_at = training.segment_batches(conds, targets, segment=64, batch=4, seed=3)
    a, b = batch_at(5, slice(None)), batch_at(5, slice(None))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["cond"], batch_at(6, slice(None))["cond"])
    np.testing.assert_array_equal(a["x0"], a["cond"] * 2)  # windows cut at the same frames
    assert a["mask"].sum(1).min() >= 64 or a["mask"].sum(1).min() == min(c.shape[0] for c in conds)


def test_a_killed_fastspeech2_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
    import jax
    from flax import nnx

    from frugal.models.fastspeech2 import FastSpeech2

    utts = [_utterance(i, (2, 3, 4, 1 + i)) for i in range(4)]
    stats = training.compute_stats(utts)
    cfg = training.fs2_config("tiny", 151, stats)
    sets = training.buckets(utts, stats, count=1)

    def train(workdir):
        model, history = training.train_fs2(
            FastSpeech2(cfg, rngs=nnx.Rngs(0)),
            sets,
            steps=4,
            batch=2,
            lr=1e-3,
            seed=0,
            workdir=workdir,
            progress=False,
        )
        return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))], history

    whole, whole_history = train(tmp_path / "whole")
    real = training.bucket_batches

    def dies_at_step_3(*args, **kwargs):
        batch_at = real(*args, **kwargs)

        def wrapped(step, rows):
            if step == 3:
                raise KeyboardInterrupt("killed")
            return batch_at(step, rows)

        return wrapped

    monkeypatch.setattr(training, "bucket_batches", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed")
    monkeypatch.setattr(training, "bucket_batches", real)
    resumed, history = train(tmp_path / "killed")
    # The returned history is the whole run's, each logged step once, with the uninterrupted run's losses.
    assert [(r["step"], r["loss"]) for r in history] == [(r["step"], r["loss"]) for r in whole_history]
    for x, y in zip(whole, resumed):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from frugal.scripts.systems.resgrad.command import run_eval_command

    home = tmp_path_factory.mktemp("resgrad-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(home)
    out = tmp_path_factory.mktemp("resgrad-out")
    try:
        config = dataclasses.replace(PRESETS["quick"], outdir=str(out))
        yield config, run_eval_command(config), out
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


@pytest.mark.slow
def test_eval_at_the_quick_preset_reports_every_system_and_claim(quick_run):
    config, figures, out = quick_run
    assert list(figures["conditions"]) == list(config.conditions)
    for condition in config.conditions:
        rows = figures["conditions"][condition]
        want = {"fs2"} | {f"{m}@{s}" for m in ("resgrad", "full", "shallow") for s in config.sample_steps}
        assert set(rows) == want
        assert all(np.isfinite(r["mcd"]) and r["mcd"] >= 0 for r in rows.values())
    assert {(c["claim"], c["condition"]) for c in figures["claims"]} == {
        (k, c) for k in ("C1", "C2", "C3") for c in config.conditions
    }
    assert all(v > 0 for m in ("resgrad", "full") for v in figures["rtf"][m].values())
    assert figures["corpus"]["train"]["utterances"] == config.train_sentences
    for p in figures["plots"] + figures["audio"]["wavs"]:
        assert Path(p).is_file() and Path(p).stat().st_size > 1000
    report = (out / "resgrad_eval.md").read_text()
    assert "| tts | resgrad@2 |" in report and "| C2 |" in report
    json.dumps(figures)  # plain figures


@pytest.mark.slow
def test_synthesize_reuses_the_trained_models_and_refuses_empty_text(quick_run, tmp_path):
    from frugal.scripts.systems.resgrad.experiment import run_synthesize

    config, _, _ = quick_run
    with pytest.raises(ValueError, match="text is empty"):
        run_synthesize(dataclasses.replace(config, text="  "), lambda m: None)
    with pytest.raises(ValueError, match="out must name a .wav"):
        run_synthesize(dataclasses.replace(config, text="Hi.", out=str(tmp_path / "x.mp3")), lambda m: None)
    out = tmp_path / "hello.wav"
    said = []
    figures = run_synthesize(dataclasses.replace(config, text="Hello there.", out=str(out)), said.append)
    assert out.is_file() and figures["seconds"] > 0.1 and "h" in figures["phonemes"]
    assert not list(tmp_path.glob("*.partial"))


def test_sampler_compiles_once_per_shape_and_matches_the_static_chain(monkeypatch):
    import jax
    import jax.numpy as jnp

    from frugal.transforms import diffusion

    traces = []
    real_run = diffusion.ddim_run

    def counted(*args, **kwargs):  # runs once per trace of the jitted chain
        traces.append(1)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(diffusion, "ddim_run", counted)
    denoiser = training.make_denoiser("wavenet", 8, channels=8, layers=1, seed=0)
    schedule = diffusion.make_schedule("linear", 25)
    sample = training.make_sampler(denoiser, schedule, parameterization="x0", eta=0.0, clip=8.0)
    cond = jax.random.normal(jax.random.key(0), (2, 16, 8))
    mask = jnp.arange(16)[None, :] < jnp.asarray([[16], [9]])
    start = jax.random.normal(jax.random.key(1), cond.shape)
    m = mask[..., None].astype(cond.dtype)
    for steps, start_step in ((1, None), (3, None), (25, None), (2, 5)):
        got = sample(cond, mask, start, jax.random.key(2), steps, start_step)
        want = diffusion.ddim_sample(
            lambda x, t: denoiser(x, t, cond, mask),
            schedule,
            start * m,
            steps,
            start_step=start_step,
            parameterization="x0",
            mask=m,
            clip=8.0,
        )
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)
        assert not np.asarray(got)[1, 9:].any()  # padded frames stay zero
    assert len(traces) - 4 == 1  # four static reference chains traced it too, the sampler once


def test_refiner_cache_sits_below_the_fastspeech2_cache(monkeypatch, tmp_path):
    from frugal.scripts.systems.resgrad.experiment import refiner_root, run_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    base = PRESETS["full"]
    refiners = dataclasses.replace(base, parameterization="eps", denoiser_steps=10)
    assert run_root(refiners) == run_root(base) and refiner_root(refiners) != refiner_root(base)
    assert refiner_root(base).parent == run_root(base)
    for change in ({"fs2_steps": 10}, {"noise_scale": 0.0}, {"seed": 1}):
        other = dataclasses.replace(base, **change)
        assert run_root(other) != run_root(base) and refiner_root(other).parent == run_root(other)


@pytest.mark.slow
def test_sweep_scores_one_corpus_per_noise_scale(quick_run, tmp_path):
    from frugal.scripts.systems.resgrad.command import run_sweep_command

    config, _, _ = quick_run
    sweep = dataclasses.replace(config, noise_scales=(0.0, config.noise_scale), outdir=str(tmp_path))
    figures = run_sweep_command(sweep)
    assert [p["noise_scale"] for p in figures["points"]] == [0.0, config.noise_scale]
    for p in figures["points"]:
        fs2 = p["rows"]["fs2"]
        assert set(p["gain"]) == {f"{m}@{s}" for m in ("resgrad", "full") for s in config.sample_steps}
        for name, gain in p["gain"].items():
            row = p["rows"][name]
            assert gain["mcd"] == pytest.approx(fs2["mcd"] - row["mcd"])
            assert gain["gv_db"] == pytest.approx(abs(fs2["gv_db"]) - abs(row["gv_db"]))
        assert p["residual_std"] > 0
    assert figures["points"][0]["mel_rms_vs_first"] == 0.0 and figures["points"][1]["mel_rms_vs_first"] > 0.01
    # Two corpora: the noiseless voice gives other recordings, so FastSpeech 2 scores differently.
    assert figures["points"][0]["rows"]["fs2"]["mcd"] != figures["points"][1]["rows"]["fs2"]["mcd"]
    assert Path(figures["plots"][0]).stat().st_size > 1000
    assert "| 0 |" in (tmp_path / "resgrad_sweep.md").read_text()
    with pytest.raises(ValueError, match="noise_scales must be"):
        dataclasses.replace(config, noise_scales=())


def _row(values, gv_db):
    values = [float(v) for v in values]
    return {"mcd": float(np.mean(values)), "mcd_se": 0.0, "mcd_values": values, "gv_db": gv_db}


def test_claims_follow_their_definitions_on_hand_built_rows():
    from frugal.scripts.systems.resgrad.experiment import claims, paired_mcd

    config = dataclasses.replace(PRESETS["full"], sample_steps=(1, 2, 4, 8), resgrad_steps=4)
    fs2 = np.asarray([10.0, 10.4, 9.6, 10.2, 9.8])
    wobble = np.asarray([0.05, -0.05, 0.02, -0.02, 0.0])
    noisy = np.asarray([1.0, -1.0, 0.8, -0.8, 0.0])
    rows = {
        "fs2": _row(fs2, -1.0),
        "resgrad@1": _row(fs2 - 1.0 + wobble, -1.1),  # best MCD, GV further from the recordings
        "resgrad@2": _row(fs2 - 0.8 + wobble, -0.5),  # beats FastSpeech 2 on both: C3 holds here
        "resgrad@4": _row(fs2 + 1.0, -0.2),
        "resgrad@8": _row(fs2 + 2.0, 0.0),
        "full@1": _row(fs2 - 0.9 + noisy, -1.0),  # 0.1 worse than ResGrad@1 on average, within noise
        "full@2": _row(fs2, -1.0),
        "full@4": _row(fs2, -1.0),
        "full@8": _row(fs2 - 1.5, -0.5),  # reaches ResGrad@1's MCD at 8 steps
        "shallow@1": _row(fs2 + 0.5, -0.9),
        "shallow@2": _row(fs2, -0.9),
        "shallow@4": _row(fs2, -0.9),
        "shallow@8": _row(fs2, -0.9),
    }
    diff, se = paired_mcd(rows, "resgrad@1", "full@1")
    d = (fs2 - 1.0 + wobble) - (fs2 - 0.9 + noisy)
    assert diff == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / np.sqrt(5))
    clear = {k: dict(v) for k, v in rows.items()}
    clear["full@1"] = _row(fs2 + 0.5, -1.0)
    rtf = {"fs2": 0.005, **{m: {"1": 0.01, "2": 0.02, "4": 0.04, "8": 0.1} for m in ("resgrad", "full", "shallow")}}
    got = claims({"conditions": {"aligned": rows, "tts": clear}, "rtf": rtf}, config)
    by = {(c["claim"], c["condition"]): c for c in got}
    assert by["C3", "aligned"]["holds"] and "ResGrad@2 beats" in by["C3", "aligned"]["text"]
    assert by["C3", "aligned"]["figures"][1] == {"beats_mcd": True, "mcd_diff": "-1.00 ± 0.02", "gv_closer": False}
    assert not by["C1", "aligned"]["holds"] and by["C1", "aligned"]["figures"]["steps"] == 1
    assert by["C1", "tts"]["holds"]  # ResGrad@1 beats full@1 (by 1.5) and shallow@1 (by 1.5), both beyond noise
    assert by["C2", "aligned"]["holds"] and by["C2", "aligned"]["figures"]["rtf_ratio"] == pytest.approx(10.0)
    assert "at 8 steps, 10.0x its RTF" in by["C2", "aligned"]["text"]
    rows["full@8"] = _row(fs2 - 0.95, -0.5)  # never reaches ResGrad@1 (mean 9.0 vs 9.05)
    got = claims({"conditions": {"aligned": rows}, "rtf": rtf}, config)
    c2 = next(c for c in got if c["claim"] == "C2")
    assert c2["holds"] and "never reaches" in c2["text"] and "its best is 9.05 at 8 steps" in c2["text"]
    rows["resgrad@2"] = _row(fs2 - 0.8 + wobble, -1.2)  # now no setting improves both
    c3 = next(c for c in claims({"conditions": {"aligned": rows}, "rtf": rtf}, config) if c["claim"] == "C3")
    assert not c3["holds"] and "no ResGrad setting of <= 4 steps" in c3["text"]
