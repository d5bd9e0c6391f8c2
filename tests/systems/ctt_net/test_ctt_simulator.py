"""The CTT-Net macula simulator: calibration, anatomy, where lesions show, the two controls, imaging."""

import argparse
import dataclasses

import numpy as np
import pytest

from frugal.scripts.configs import add_config_flags, config_from_flags
from frugal.scripts.systems.ctt_net import simulator as sim
from frugal.scripts.systems.ctt_net.eye_data import EyeSet, decimal_to_logmar

SMALL = dict(height=16, width=32)  # images do not enter the labels; keep them cheap


@pytest.fixture(scope="module")
def cohort_3000():
    return sim.simulate(sim.SimulatorConfig(eyes=3000, **SMALL))


def test_calibration_matches_the_cataract_cohort(cohort_3000):
    """Yang et al., Curr Eye Res 2025: pre-op logMAR 0.60 +- 0.39, post-op 0.14 +- 0.18."""
    pre = decimal_to_logmar(cohort_3000.pre_va)
    post = decimal_to_logmar(cohort_3000.post_va)
    assert abs(pre.mean() - 0.60) <= 0.05 and abs(pre.std() - 0.39) <= 0.07
    assert abs(post.mean() - 0.14) <= 0.05 and abs(post.std() - 0.18) <= 0.07
    # the truth's logMAR arrays are the values the decimal labels carry
    np.testing.assert_allclose(cohort_3000.truth["pre_logmar"], pre, atol=1e-5)
    np.testing.assert_allclose(cohort_3000.truth["post_logmar"], post, atol=1e-5)
    # surgery helps on average; eyes with a macular lesion keep worse post-op VA than clean maculae
    assert pre.mean() - post.mean() > 0.3
    lesions = cohort_3000.truth["num_lesions"] > 0
    assert post[lesions].mean() > post[~lesions].mean() + 0.1


def test_truth_arrays_and_damage_partition(cohort_3000):
    t = cohort_3000.truth
    expected = {
        "cataract",
        "potential_logmar",
        "pre_logmar",
        "post_logmar",
        "damage_h_only",
        "damage_v_only",
        "damage_both",
        "damage_hidden",
        "num_lesions",
    }
    assert expected <= set(t)
    for key in expected:
        assert t[key].dtype == np.float32 and t[key].shape == (3000,), key
    parts = t["damage_h_only"] + t["damage_v_only"] + t["damage_both"] + t["damage_hidden"]
    np.testing.assert_allclose(parts, t["potential_logmar"] - sim.HEALTHY_LOGMAR, atol=1e-4)
    assert np.all(parts[t["num_lesions"] == 0] == 0)
    assert np.all((t["cataract"] >= 0) & (t["cataract"] <= 1))


def test_foveal_pit_onl_bump_and_nasal_rnfl():
    rng = np.random.default_rng(3)
    for anatomy in (sim.mean_anatomy(1), sim.sample_anatomy(rng, 200)):
        x = np.asarray([0.0, 2.0, 0.0, 2.5, -2.5])
        y = np.asarray([0.0, 0.0, 2.0, 0.0, 0.0])
        thick = sim.layer_thickness_um(anatomy, x, y)  # (n, layers, points)
        inner = thick[:, : sim.INNER_LAYERS].sum(axis=1)
        assert np.all(inner[:, 0] < 0.2 * inner[:, 1]) and np.all(inner[:, 0] < 0.2 * inner[:, 2])
        onl = thick[:, [name for name, _, _ in sim.LAYERS].index("ONL")]
        assert np.all(onl[:, 0] > onl[:, 1])
        rnfl = thick[:, 0]
        assert np.all(rnfl[:, 3] > rnfl[:, 4] + 10.0)  # nasal (towards the disc) thicker than temporal
        # the surfaces are ordered top to bottom (no layer of negative thickness)
        surfaces = sim.layer_surfaces(anatomy, x, y, height=64)
        assert np.all(np.diff(surfaces, axis=1) >= 0)


def _healthy_and_lesioned(kind, x0, y0, radius=0.35, height=100.0):
    anatomy = sim.mean_anatomy(1)
    scans = {}
    for label, lesions in (
        ("healthy", sim.Lesions.empty(1, 1)),
        ("lesion", sim.Lesions.single(kind, x0, y0, radius, height)),
    ):
        for meridian in ("horizontal", "vertical"):
            scans[label, meridian] = sim.render_bscan(anatomy, lesions, meridian, height=64, width=128)
    return scans


@pytest.mark.parametrize("kind", ["cyst", "drusen", "subretinal_fluid", "erm", "ez_disruption"])
def test_a_lesion_shows_only_in_the_scans_that_cut_it(kind):
    # on the horizontal meridian, 1.2 mm nasal: only the horizontal scan changes
    scans = _healthy_and_lesioned(kind, 1.2, 0.0)
    assert np.abs(scans["lesion", "horizontal"] - scans["healthy", "horizontal"]).max() > 0.2
    np.testing.assert_array_equal(scans["lesion", "vertical"], scans["healthy", "vertical"])
    # on the vertical meridian, 1.2 mm superior: only the vertical scan changes
    scans = _healthy_and_lesioned(kind, 0.0, 1.2)
    assert np.abs(scans["lesion", "vertical"] - scans["healthy", "vertical"]).max() > 0.2
    np.testing.assert_array_equal(scans["lesion", "horizontal"], scans["healthy", "horizontal"])
    # at the fovea: both change
    scans = _healthy_and_lesioned(kind, 0.0, 0.0)
    for meridian in ("horizontal", "vertical"):
        assert np.abs(scans["lesion", meridian] - scans["healthy", meridian]).max() > 0.2


def test_macular_hole_opens_the_fovea_in_both_scans():
    scans = _healthy_and_lesioned("macular_hole", 0.0, 0.0, radius=0.2)
    for meridian in ("horizontal", "vertical"):
        hole, healthy = scans["lesion", meridian][0], scans["healthy", meridian][0]
        centre = slice(60, 68)
        # the retina's rows at the fovea go dark (vitreous-like) down to the RPE
        surfaces = sim.layer_surfaces(sim.mean_anatomy(1), np.zeros(1), np.zeros(1), height=64)[0, :, 0]
        rows = slice(int(surfaces[sim.S["OPL|ONL"]]) + 1, int(surfaces[sim.S["EZ top"]]))
        assert hole[rows, centre].mean() < healthy[rows, centre].mean() - 0.2


def test_cut_by_follows_the_footprint():
    les = sim.Lesions.single("cyst", 1.2, 0.2, 0.3)
    assert sim.cut_by(les, "horizontal", 128, 6.0)[0, 0]
    assert not sim.cut_by(les, "vertical", 128, 6.0)[0, 0]
    les = sim.Lesions.single("cyst", 1.2, 0.4, 0.3)  # 0.4 mm off the horizontal line: neither
    assert not sim.cut_by(les, "horizontal", 128, 6.0)[0, 0]
    assert not sim.cut_by(les, "vertical", 128, 6.0)[0, 0]
    with pytest.raises(ValueError, match="meridian"):
        sim.cut_by(les, "oblique", 128, 6.0)


@pytest.mark.parametrize("width", [32, 128])
def test_mixed_is_mostly_one_view_and_both_is_never(width):
    config = sim.SimulatorConfig(eyes=3000, height=16, width=width)
    mixed = sim.sample_cohort(config)
    t = mixed.truth
    damage = {k: t[f"damage_{k}"].sum() for k in ("h_only", "v_only", "both", "hidden")}
    total = sum(damage.values())
    one_view = (damage["h_only"] + damage["v_only"]) / total
    assert one_view > 0.4
    assert damage["hidden"] / total < 0.2
    assert 0.35 < damage["h_only"] / (damage["h_only"] + damage["v_only"]) < 0.65  # no meridian favoured
    h = sim.cut_by(mixed.lesions, "horizontal", width, 6.0)
    v = sim.cut_by(mixed.lesions, "vertical", width, 6.0)
    present = mixed.lesions.present
    assert (h ^ v).sum() > 0.5 * present.sum()  # most lesions one-view
    assert 0 < (h & v).sum() < 0.3 * present.sum() and 0 < (present & ~h & ~v).sum() < 0.3 * present.sum()

    both = sim.sample_cohort(dataclasses.replace(config, visibility="both"))
    tb = both.truth
    for key in ("damage_h_only", "damage_v_only", "damage_hidden"):
        assert np.all(tb[key] == 0), key
    assert tb["damage_both"].sum() > 0
    hb = sim.cut_by(both.lesions, "horizontal", width, 6.0)
    vb = sim.cut_by(both.lesions, "vertical", width, 6.0)
    assert np.all((hb & vb) == both.lesions.present)
    # the control changes where lesions sit, not which eyes have them
    np.testing.assert_array_equal(tb["num_lesions"], t["num_lesions"])
    np.testing.assert_array_equal(tb["cataract"], t["cataract"])


def test_pre_va_informative_and_uninformative():
    corr = {}
    for mode in ("informative", "uninformative"):
        cohort = sim.sample_cohort(sim.SimulatorConfig(eyes=3000, pre_va=mode, **SMALL))
        corr[mode] = np.corrcoef(cohort.truth["pre_logmar"], cohort.truth["post_logmar"])[0, 1]
        pre = cohort.truth["pre_logmar"]
        assert abs(pre.mean() - 0.60) <= 0.05 and abs(pre.std() - 0.39) <= 0.07  # same marginal
    assert abs(corr["uninformative"]) < 0.1
    assert corr["informative"] > 0.12
    # before noise, pre-op VA is the worse of the two limits, at most 0.3 logMAR worse still
    a, b = np.asarray([0.1, 1.0, 0.5, 0.0]), np.asarray([1.1, 0.0, 0.5, 0.3])
    combined = sim.combined_logmar(a, b)
    assert np.all(combined >= np.maximum(a, b) - 1e-6) and np.all(combined <= np.maximum(a, b) + np.log10(2) + 1e-6)
    assert np.all(combined[:2] <= np.maximum(a, b)[:2] + 0.05)  # 1 logMAR apart: the worse one, within 0.05


def _rpe_contrast(image, anatomy, meridian, width=128):
    x, y = sim.scan_coordinates(meridian, width, 6.0)
    surfaces = sim.layer_surfaces(anatomy, x, y, height=image.shape[1])[0]
    cols = np.arange(width)
    rpe = image[0, np.floor((surfaces[sim.S["RPE top"]] + surfaces[sim.S["BM"]]) / 2).astype(int), cols]
    vitreous = image[0, : max(2, int(surfaces[sim.S["ILM"]].min()) - 3)]
    return (rpe.mean() - vitreous.mean()) / vitreous.std()


@pytest.mark.parametrize("meridian", ["horizontal", "vertical"])
def test_cataract_lowers_image_snr_only_when_coupled(meridian):
    anatomy, lesions = sim.mean_anatomy(1), sim.Lesions.empty(1, 1)
    images = {}
    for snr in (1.0, 0.0):
        for c in (0.1, 0.9):
            images[snr, c] = sim.render_bscan(
                anatomy,
                lesions,
                meridian,
                cataract=c,
                cataract_snr=snr,
                rng=np.random.default_rng(7),
            )
    clear, dense = (_rpe_contrast(images[1.0, c], anatomy, meridian) for c in (0.1, 0.9))
    assert dense < 0.8 * clear
    np.testing.assert_array_equal(images[0.0, 0.1], images[0.0, 0.9])


def test_cataract_and_image_brightness_across_a_cohort():
    def corr(snr):
        eyes = sim.simulate(sim.SimulatorConfig(eyes=300, height=32, width=64, cataract_snr=snr, seed=5))
        brightness = eyes.horizontal.mean(axis=(1, 2)) + eyes.vertical.mean(axis=(1, 2))
        return np.corrcoef(eyes.truth["cataract"], brightness)[0, 1]

    assert corr(1.0) < -0.5
    assert abs(corr(0.0)) < 0.2


def test_simulate_is_deterministic_in_seed_and_well_formed():
    config = sim.SimulatorConfig(eyes=40, height=32, width=64, seed=11)
    a, b = sim.simulate(config), sim.simulate(config)
    c = sim.simulate(dataclasses.replace(config, seed=12))
    assert isinstance(a, EyeSet) and len(a) == 40 and a.image_shape == (32, 64)
    for name in ("horizontal", "vertical", "pre_va", "post_va"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    for key in a.truth:
        np.testing.assert_array_equal(a.truth[key], b.truth[key])
    assert a.eye_ids[0] == "sim-00000" and a.eye_ids[39] == "sim-00039"
    for images in (a.horizontal, a.vertical):
        assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1
    # the two views differ (different slices and speckle) but share the eye's fovea column
    assert not np.array_equal(a.horizontal, a.vertical)
    centre_h, centre_v = a.horizontal[:, :, 31:33].mean(axis=2), a.vertical[:, :, 31:33].mean(axis=2)
    assert np.corrcoef(centre_h.ravel(), centre_v.ravel())[0, 1] > 0.8
    # images do not change the labels: a different image size keeps the acuities
    d = sim.simulate(dataclasses.replace(config, height=16, width=128))
    np.testing.assert_array_equal(a.post_va, d.post_va)


@pytest.mark.parametrize(
    "field, value",
    [
        ("eyes", 0),
        ("height", 8),
        ("width", 10_000),
        ("scan_mm", 0.0),
        ("visibility", "one"),
        ("pre_va", "maybe"),
        ("lesion_rate", -1.0),
        ("label_noise", -0.1),
        ("cataract_snr", -1.0),
        ("seed", -3),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        sim.SimulatorConfig(**{field: value})


def test_config_fields_become_flags():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, sim.SimulatorConfig)
    args = parser.parse_args(["--visibility", "both", "--pre-va", "uninformative", "--lesion-rate", "2.0"])
    config = config_from_flags(args, sim.SimulatorConfig)
    assert (config.visibility, config.pre_va, config.lesion_rate) == ("both", "uninformative", 2.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--visibility", "one"])


def test_plot_examples_writes_a_png(tmp_path):
    eyes = sim.simulate(sim.SimulatorConfig(eyes=3, height=32, width=64))
    path = sim.plot_examples(eyes, tmp_path / "examples.png", n=3)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
