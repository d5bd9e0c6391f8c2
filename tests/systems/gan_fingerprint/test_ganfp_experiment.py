"""The GAN-fingerprint protocol: config checks, summaries and verdicts against NumPy, the run cache,
and `frugal ganfp` end to end at the quick size."""

import dataclasses
import json

import numpy as np
import pytest

from frugal.scripts.systems.gan_fingerprint import experiment
from frugal.scripts.systems.gan_fingerprint.config import PRESETS, GanfpConfig
from frugal.scripts.systems.gan_fingerprint.zoo_run import Zoo, from_uint8, to_uint8

QUICK = PRESETS["quick"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_family": "tconv"}, "is a training family"),
        ({"families": ("tconv", "nearest")}, "no family is left to test on"),
        ({"families": ("nearest", "shuffle", "bilinear")}, "not in the zoo"),
        ({"det_batch": 15}, "det_batch=15 must be even"),
        ({"seeds": ()}, "at least one seed"),
        ({"perturb_modes": ()}, "perturb_modes must name"),
        ({"aug_prob": 1.5}, "aug_prob=1.5"),
        ({"families": ("tconv", "tconv", "nearest")}, "names a family twice"),
        ({"photos": ("bundled", "lena")}, "photo name 'lena' is not known"),
        ({"photos": ("bundled", "debian"), "patch_short_side": None}, r"over 800 px.*--patch-short-side"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(QUICK, **kwargs)


def test_the_real_class_follows_the_photos_setting():
    from frugal.scripts.systems.gan_fingerprint.photos import load_photo_patches
    from frugal.scripts.systems.gan_fingerprint.zoo_run import load_real, zoo_settings

    three = dataclasses.replace(QUICK, photos=("rocket", "chelsea", "coffee"))
    real = load_real(three)
    expected = load_photo_patches(32, names=("rocket", "chelsea", "coffee"), short_side=96, stride=16)
    np.testing.assert_array_equal(real["train"], expected.train)
    assert not np.array_equal(load_real(QUICK)["train"][:10], real["train"][:10])
    # Another real class is another zoo (its cache key changes); the default keeps the older caches' key.
    assert "photos" not in zoo_settings(QUICK, "tconv")
    assert zoo_settings(three, "tconv")["photos"] == ["rocket", "chelsea", "coffee"]
    assert zoo_settings(dataclasses.replace(QUICK, photos=("bundled",))) == zoo_settings(QUICK)


def test_test_families_exclude_training_and_validation():
    config = GanfpConfig()
    assert config.test_families() == (
        "bilinear",
        "shuffle",
        "tconv_sn_hinge",
        "resynth_tconv",
        "resynth_nearest",
        "resynth_shuffle",
    )


def test_uint8_round_trip_is_exact_on_the_grid():
    x = np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1).repeat(3, -1) / 255
    np.testing.assert_array_equal(from_uint8(to_uint8(x)), x)
    assert to_uint8(np.float32([[0.5 / 255 + 1e-4]]))[0, 0] == 1


def _fake_runs(config, rng):
    runs = {}
    for m in ("none", "blur_jpeg", "fingerprint"):
        runs[m] = []
        for s in config.seeds:
            test = {f: {k: float(rng.random()) for k in ("ap", "acc", "real_acc", "fake_acc")} for f in config.families}
            runs[m].append({"method": m, "seed": s, "best_step": 3, "val": {"ap": 0.7}, "test": test, "seconds": 1.0})
    return runs


def test_summary_against_numpy():
    config = dataclasses.replace(GanfpConfig(cache_dir=None), seeds=(0, 1, 2))
    runs = _fake_runs(config, np.random.default_rng(0))
    summary = experiment.summarize(runs, config)
    unseen = config.test_families()
    per_seed = [np.mean([r["test"][f]["ap"] for f in unseen]) for r in runs["fingerprint"]]
    assert summary["fingerprint"]["unseen_ap"]["mean"] == pytest.approx(np.mean(per_seed))
    assert summary["fingerprint"]["unseen_ap"]["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    bil = [r["test"]["bilinear"]["acc"] for r in runs["none"]]
    assert summary["none"]["families"]["bilinear"]["acc"]["mean"] == pytest.approx(np.mean(bil))
    checks = experiment.checks(summary, config)
    assert [c["claim"].split(" on ")[0] for c in checks[:4]] == [
        "fingerprint augmentation beats no augmentation",
        "fingerprint augmentation beats no augmentation",
        "fingerprint augmentation beats blur + JPEG",
        "fingerprint augmentation beats blur + JPEG",
    ]
    d = np.asarray(summary["fingerprint"]["unseen_ap"]["values"]) - summary["none"]["unseen_ap"]["values"]
    assert checks[0]["difference"] == pytest.approx(d.mean())


@pytest.mark.parametrize(
    ("ours", "theirs", "verdict"),
    [
        ([0.9, 0.91, 0.92], [0.8, 0.8, 0.81], "holds"),
        ([0.9, 0.7, 0.95], [0.8, 0.8, 0.81], "direction only (within 2 SE)"),
        ([0.8, 0.8, 0.8], [0.8, 0.8, 0.8], "does not hold"),
        ([0.7, 0.7, 0.7], [0.8, 0.8, 0.8], "does not hold"),
        ([0.9], [0.8], "direction only (one seed)"),
    ],
)
def test_paired_verdict(ours, theirs, verdict):
    assert experiment.paired_verdict(ours, theirs)["verdict"] == verdict


def test_detector_runs_are_cached_by_recipe(tmp_path, monkeypatch):
    config = dataclasses.replace(QUICK, cache_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    imgs = lambda n: from_uint8(to_uint8(rng.random((n, 8, 8, 3))))
    zoo = Zoo(
        real={s: imgs(16) for s in ("train", "val", "test")},
        fakes={f: {s: imgs(16) for s in ("train", "val", "test")} for f in config.families},
        ae=None,
        info={},
    )
    calls = []

    class Run:
        model, best_step, val, history, seconds = None, 3, {"ap": 0.5, "acc": 0.5}, [], 0.1

    monkeypatch.setattr(experiment, "train_detector", lambda *a, **k: calls.append(a[0]) or Run())
    monkeypatch.setattr(experiment, "score_set", lambda model, real, fake: {"ap": 0.75, "acc": 0.5})
    first = experiment.detector_run(zoo, config, "none", 0)
    again = experiment.detector_run(zoo, config, "none", 0)
    other = experiment.detector_run(zoo, dataclasses.replace(config, det_steps=7), "none", 0)
    assert calls == ["none", "none"]  # the repeat came from the cache, a changed recipe did not
    assert first == again == json.loads(json.dumps(other)) and first["test"]["tconv"]["ap"] == 0.75


def test_ganfp_commands_end_to_end(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from frugal.scripts.cli import main

    mine = tmp_path / "mine"  # a user's generator in the CNNDetection layout
    rng = np.random.default_rng(0)
    for label in ("0_real", "1_fake"):
        (mine / "mygan" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(mine / "mygan" / label / f"{i}.png")
    out = tmp_path / "out"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    argv = ["ganfp", "eval", "--preset", "quick", "--outdir", str(out), "--test-root", str(mine), *cache]
    assert main(argv + ["--json", str(tmp_path / "e.json")]) == 0
    figures = json.loads((tmp_path / "e.json").read_text())
    assert set(figures["summary"]["npr"]["user"]) == {"mygan"}
    assert "Your test generators" in (out / "ganfp_eval.md").read_text()
    assert set(figures["summary"]) == {"none", "fingerprint", "npr"}
    assert figures["test_families"] == ["resynth_shuffle"]
    for name in ("ganfp_eval.md", "ganfp_eval.json", "ganfp_spectra.png", "ganfp_examples.png"):
        assert (out / name).stat().st_size > 0
    zoo = figures["zoo"]
    assert zoo["families"]["tconv"]["peak_contrast_2"] > zoo["families"]["nearest"]["peak_contrast_2"]
    # `train` reuses the cached zoo samples and the cached npr detector of seed 0: nothing retrains
    from frugal.scripts.systems.gan_fingerprint import zoo_run

    def refuse(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(zoo_run, "train_family", refuse)
    monkeypatch.setattr(experiment, "train_detector", refuse)
    argv = ["ganfp", "train", "--preset", "quick", "--train-method", "npr", "--test-root", str(mine), *cache]
    assert main([*argv, "--json", str(tmp_path / "t.json")]) == 0
    trained = json.loads((tmp_path / "t.json").read_text())
    assert trained["test"] == figures["runs"]["npr"][0]["test"]
    assert "npr detector" in capsys.readouterr().out


def test_command_errors_name_the_setting(tmp_path, capsys):
    from frugal.scripts.cli import main

    assert main(["ganfp", "eval", "--preset", "quick", "--val-family", "tconv"]) == 2
    assert "val_family='tconv' is a training family" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ganfp", "eval", "--preset", "quick", "--val-family", "stylegan"])
    assert "stylegan" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ganfp", "eval", "--preset", "quick", "--test-root", str(empty)]) == 2
    assert "has no generator folders" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a flag `zoo` never reads is refused, not ignored
        main(["ganfp", "zoo", "--preset", "quick", "--methods", "none"])


def test_quick_tour_section_points_to_the_command(tmp_path):
    from frugal.scripts.systems.gan_fingerprint import command

    section = command.tour_section(True, tmp_path)
    ((what, why),) = section.summary
    assert what == "why the tour cannot show it" and "`frugal ganfp eval --preset debian`" in why
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_detector_defaults_are_the_configs():
    """One source of truth: a detector built with no settings trains as the default experiment's does,
    and a changed config knob reaches the detector."""
    from frugal.scripts.systems.gan_fingerprint.detector import DetectorSettings

    assert experiment.detector_settings(GanfpConfig()) == DetectorSettings()
    tuned = experiment.detector_settings(GanfpConfig(det_steps=123, det_lr=0.5, depth=20))
    assert (tuned.steps, tuned.learning_rate, tuned.depth) == (123, 0.5, 20)
