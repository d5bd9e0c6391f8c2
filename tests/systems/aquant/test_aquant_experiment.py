"""The AQuant experiment and `frugal quant aquant`: config checks, paired statistics, the granularity
picked on validation, flags derived from the config, presets and the tour section."""

import dataclasses
import json
import types

import numpy as np
import pytest

from frugal.scripts.systems.aquant.config import AUTO_CANDIDATES, PRESETS, AQuantConfig, parse_setting


def test_experiment_config_and_cli_settings_errors():
    assert parse_setting("w2a2") == (2, 2) and parse_setting(" W3A3") == (3, 3)
    # the old comma form in one value still works; names are stored upper-case
    assert AQuantConfig(settings=("w2a2, W3A3",)).setting_pairs == ((2, 2), (3, 3))
    assert AQuantConfig(settings=("w2a2", "W3A3")).settings == ("W2A2", "W3A3")
    with pytest.raises(ValueError, match="W2A2"):
        parse_setting("2/2")
    with pytest.raises(ValueError, match="W2A2"):
        AQuantConfig(settings=("2/2",))
    with pytest.raises(ValueError, match="outside the supported range"):
        AQuantConfig(settings=("W1A4",))
    with pytest.raises(ValueError, match="methods"):
        AQuantConfig(methods=("rtn", "brecq"))
    with pytest.raises(ValueError, match="granularity"):
        AQuantConfig(granularity="channel_level", ablation=("row",))
    with pytest.raises(ValueError, match="granularity"):
        AQuantConfig(granularity="pixel")


def test_experiment_reuses_the_reconstruction_config_and_methods_differ_only_in_the_border():
    from frugal.scripts.systems.aquant.experiment import recon_config_for
    from frugal.transforms.quant.block_recon import ReconConfig

    config = AQuantConfig()
    assert isinstance(config.recon, ReconConfig)
    qdrop, aquant = (recon_config_for(config, 2, 2, m, "channel_level") for m in ("qdrop", "aquant"))
    changed = {f.name for f in dataclasses.fields(ReconConfig) if getattr(qdrop, f.name) != getattr(aquant, f.name)}
    assert changed == {"method"}
    # Every knob the experiment does not set per run comes from config.recon unchanged.
    per_run = {"weight_bits", "act_bits", "method", "border_granularity"}
    for f in dataclasses.fields(ReconConfig):
        if f.name not in per_run:
            assert getattr(aquant, f.name) == getattr(config.recon, f.name), f.name
    # and config.recon is made of the config's own fields
    tuned = AQuantConfig(iterations=7, recon_batch_size=4, weight_lr=0.5, fallback=False, granularity="tensor")
    assert (tuned.recon.iterations, tuned.recon.batch_size, tuned.recon.weight_lr) == (7, 4, 0.5)
    assert tuned.recon.fallback_to_nearest is False and tuned.recon.border_granularity == "tensor"
    with pytest.raises(TypeError, match="recon"):
        AQuantConfig(recon={"iterations": 10})
    with pytest.raises(ValueError, match="validation_size"):
        AQuantConfig(validation_size=-1)
    with pytest.raises(ValueError, match="iterations"):
        AQuantConfig(iterations=0)


def test_accuracy_noise_estimates_match_their_formulas():
    from frugal.scripts.systems.aquant.experiment import paired_difference, std_error

    assert std_error(0.5, 10000) == pytest.approx(0.005)
    rng = np.random.default_rng(0)
    a, b = rng.random(400) < 0.6, rng.random(400) < 0.5
    diff, se = paired_difference(a, b)
    d = a.astype(float) - b.astype(float)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert se == pytest.approx(np.sqrt(np.sum((d - d.mean()) ** 2) / (len(d) - 1) / len(d)))
    # Identical predictions: no difference and no noise.
    assert paired_difference(a, a) == (0.0, 0.0)


def test_experiment_reports_the_granularity_that_wins_on_validation(monkeypatch, tmp_path):
    """The selection uses validation accuracy only: here the validation winner is not the test winner."""
    import frugal.models.registry
    import frugal.transforms.quant.block_recon as block_recon
    from frugal.scripts.systems.aquant import experiment as exp

    n = 100
    # Images are (index, is_validation); every label is 0. A net is correct on the first k images.
    test_x = np.stack([np.arange(n), np.zeros(n)], 1)
    val_x = np.stack([np.arange(n), np.ones(n)], 1)
    labels = np.zeros(n, np.int64)
    correct_count = {  # granularity: (validation, test)
        "channel_level": (60, 90),
        "tensor": (80, 70),
        "level": (80, 50),
        "rtn": (40, 40),
        "qdrop": (50, 50),
    }

    def net_for(key):
        val_k, test_k = correct_count[key]

        def net(images):
            k = np.where(images[:, 1] > 0, val_k, test_k)
            right = images[:, 0] < k
            return np.stack([right, ~right], 1).astype(np.float32)

        return net

    data = types.SimpleNamespace(
        train_x=np.zeros((40, 2)),
        train_y=np.zeros(40, np.int64),
        test_x=test_x,
        test_y=labels,
        num_classes=2,
        image_shape=(1, 1, 2),
        name="fake",
    )
    monkeypatch.setattr(exp, "load_data", lambda config: (data, (val_x, labels)))
    monkeypatch.setattr(
        frugal.models.registry, "create_image_model", lambda *a, **k: types.SimpleNamespace(eval=lambda: None)
    )
    monkeypatch.setattr(exp, "train_or_load_float_model", lambda config, data, model: (model, 0.0))
    monkeypatch.setattr(block_recon, "float_network", lambda model: net_for("rtn"))

    def fake_quantize(model, calibration, recon):
        key = recon.border_granularity if recon.method == "aquant" else recon.method
        return net_for(key), {"blocks": [], "fallbacks": 0}

    monkeypatch.setattr(block_recon, "quantize_resnet", fake_quantize)
    config = AQuantConfig(
        settings=("W2A2",),
        outdir=str(tmp_path),
        progress=False,
        granularity="auto",
        candidates=("channel_level", "tensor", "level"),
    )
    figures = exp.run(config)
    chosen = figures["granularity_selection"]["W2A2"]
    assert chosen["selected"] == "tensor"  # 80 on validation; ties with "level", which comes later
    assert figures["results"]["W2A2"]["aquant"]["granularity"] == "tensor"
    assert figures["accuracy"]["W2A2"]["aquant"] == pytest.approx(0.70)  # not channel_level's better 0.90 test
    assert figures["differences"]["W2A2: AQuant - QDrop-style"]["points"] == pytest.approx(20.0)
    assert "picked on the validation images" in (tmp_path / "aquant.md").read_text()
    assert figures["machine"]["cores"] >= 1 and "load_average_before" in figures["machine"]
    with pytest.raises(ValueError, match="ablation"):
        AQuantConfig(granularity="auto", ablation=("tensor",))
    with pytest.raises(ValueError, match="validation_size"):
        AQuantConfig(granularity="auto", validation_size=0)


def _config_for(argv):
    from frugal.scripts import cli
    from frugal.scripts.configs import config_from_flags

    args = cli.build_parser().parse_args(["quant", "aquant", *argv])
    assert args._command.path == ("quant", "aquant")
    return config_from_flags(args, AQuantConfig, PRESETS)


def test_cli_picks_granularity_on_validation_by_default_but_not_in_the_quick_run():
    full = _config_for([])
    assert full == PRESETS["full"] == AQuantConfig()
    assert full.granularity_candidates == AUTO_CANDIDATES and full.ablation == ()
    assert _config_for(["--preset", "tour"]).granularity_candidates == ()
    assert _config_for(["--preset", "quick"]).granularity_candidates == ()
    fixed = _config_for(["--granularity", "tensor"])
    assert fixed.granularity_candidates == () and fixed.recon.border_granularity == "tensor"
    chosen = _config_for(["--candidates", "tensor", "level"])
    assert chosen.granularity_candidates == ("tensor", "level")
    with pytest.raises(ValueError, match="--candidates"):
        _config_for(["--granularity", "tensor", "--candidates", "level"])
    with pytest.raises(SystemExit):  # argparse rejects a granularity outside the choices
        _config_for(["--candidates", "pixel"])


def test_flags_come_from_the_config_fields():
    config = _config_for(
        [
            "--preset",
            "quick",
            "--settings",
            "W2A4",
            "w3a3",
            "--iterations",
            "3",
            "--fp-cache",
            "fp.npz",
            "--no-fallback",
            "--first-last-bits",
            "none",
            "--methods",
            "rtn",
            "aquant",
        ]
    )
    assert config.setting_pairs == ((2, 4), (3, 3))
    assert config.iterations == 3 and config.recon.iterations == 3
    assert config.fp_cache == "fp.npz" and config.recon.fallback_to_nearest is False
    assert config.first_last_bits is None and config.methods == ("rtn", "aquant")
    assert config.width == PRESETS["quick"].width  # the rest is the preset's
    # the fixed-granularity ablation: off with no value
    assert _config_for(["--granularity", "channel_level", "--ablation"]).ablation == ()
    assert _config_for(["--granularity", "level", "--ablation", "tensor"]).ablation == ("tensor",)


def test_bad_flag_values_end_in_one_line_and_status_2(capsys, tmp_path):
    from frugal.scripts import cli

    assert cli.main(["quant", "aquant", "--preset", "quick", "--settings", "W9A2", "--outdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "outside the supported range" in err and "--settings" in err


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`frugal quant aquant --preset quick` once for the tests below (about a minute: compilation)."""
    from frugal.scripts import cli

    outdir = tmp_path_factory.mktemp("aquant")
    out = outdir / "figures.json"
    code = cli.main(["quant", "aquant", "--preset", "quick", "--outdir", str(outdir), "--json", str(out)])
    assert code == 0
    return outdir, json.loads(out.read_text())


@pytest.mark.slow
def test_quick_preset_runs_end_to_end_and_writes_reports(quick_run):
    outdir, figures = quick_run
    assert figures["config"] == json.loads(json.dumps(dataclasses.asdict(PRESETS["quick"]) | {"outdir": str(outdir)}))
    assert set(figures["accuracy"]["W2A2"]) == {"rtn", "qdrop", "aquant"}
    for acc in (figures["fp_accuracy"], *figures["accuracy"]["W2A2"].values()):
        assert 0.0 <= acc <= 1.0
    assert figures["fp_accuracy"] > 0.3  # the float model learned something (chance 0.1)
    assert figures["dataset"]["validation"] == PRESETS["quick"].validation_size
    # every block was reconstructed from the same calibration set, with its error logged
    blocks = figures["blocks"]["W2A2/aquant"]
    assert blocks and all(b["loss_final"] <= b["loss_rtn"] for b in blocks)  # fallback keeps RTN otherwise
    assert {"aquant.md", "aquant.png", "aquant.json"} <= {p.name for p in outdir.iterdir()}
    assert "cores" in (outdir / "aquant.md").read_text()


@pytest.mark.slow
def test_tour_section_runs_the_tour_preset(tmp_path, monkeypatch, quick_run):
    """The section runs `run` on the tour preset (redirected into the tour's folder) and summarizes it;
    the figures of the quick run stand in for the half-minute tour run."""
    from frugal.scripts.systems.aquant import command, experiment

    _, figures = quick_run
    seen = []

    def fake_run(config):
        seen.append(config)
        (tmp_path / "aquant").mkdir()
        (tmp_path / "aquant" / "aquant.png").write_bytes(b"png")
        return {**figures, "plot": str(tmp_path / "aquant" / "aquant.png")}

    monkeypatch.setattr(experiment, "run", fake_run)
    section = command.tour_section(True, tmp_path)
    assert seen == [dataclasses.replace(PRESETS["tour"], outdir=str(tmp_path / "aquant"))]
    assert section.summary[0][0] == "W2A2 top-1 % FP / RTN / QDrop-style / AQuant"
    shown = [float(v) for v in section.summary[0][1].split(" / ")]
    accs = figures["accuracy"]["W2A2"]
    expected = [figures["fp_accuracy"], accs["rtn"], accs["qdrop"], accs["aquant"]]
    assert shown == pytest.approx([100 * v for v in expected], abs=0.06)
    assert section.plots == ["aquant/aquant.png"]
    assert "W2A2" in section.markdown and "machine:" in section.markdown


@pytest.mark.parametrize(
    "points, se, at_least, expected",
    [
        (0.28, 2.21, False, "within noise"),  # the case that printed "yes" before
        (2.98, 0.36, False, "holds"),
        (-0.85, 0.25, False, "NO"),
        (-0.1, 0.2, True, "holds"),  # ">=" within noise holds
        (-0.9, 0.2, True, "NO"),
    ],
)
def test_a_check_holds_only_beyond_its_noise(points, se, at_least, expected):
    from frugal.scripts.systems.aquant.experiment import verdict

    assert verdict(points, se, at_least=at_least) == expected
