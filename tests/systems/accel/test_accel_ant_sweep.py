"""ANT table reproduction, batched evaluation, sweeps, Pareto fronts and gradient design search."""

import jax
import numpy as np
import pytest

from frugal.accel import cost, designs, paper_workloads, sweep


@pytest.fixture(scope="module")
def ant_table():
    from frugal.scripts.systems.accel.ant_table import run_ant
    from frugal.scripts.systems.accel.config import AntConfig

    return run_ant(AntConfig(trace_resnets=False))


def test_ant_table_within_tolerance(ant_table):
    checked = 0
    for row in ant_table["rows"]:
        for name in ("BitFusion", "OLAccel", "AdaFloat", "BiScaled"):
            cell = row[name]
            if cell["paper_speedup"] is None:
                continue
            assert cell["speedup"] == pytest.approx(cell["paper_speedup"], rel=0.15), (row["model"], name)
            assert cell["energy"] == pytest.approx(cell["paper_energy"], rel=0.15), (row["model"], name)
            checked += 1
    assert checked == 26
    for name, mean in ant_table["means"].items():
        assert mean["speedup"] == pytest.approx(mean["paper_speedup"], rel=0.10), name
        assert mean["energy"] == pytest.approx(mean["paper_energy"], rel=0.10), name


def test_paper_bits_rules():
    n = len(paper_workloads.resnet50())
    assert paper_workloads.paper_bits("AdaFloat", "resnet50", n) == [8] * n
    ant = paper_workloads.paper_bits("ANT-OS", "resnet50", n)
    assert ant[0] == ant[-1] == 8 and set(ant[1:-1]) == {4}
    bf = paper_workloads.paper_bits("BitFusion", "resnet50", n)
    assert (bf.count(8), bf.count(4)) == (33, 21)
    with pytest.raises(ValueError, match="design"):
        paper_workloads.paper_bits("TPU", "resnet50", n)


def test_evaluate_batch_equals_single_evaluations():
    wl = paper_workloads.resnet18()
    names = ["ANT-OS", "BitFusion", "AdaFloat"]
    stacked = designs.stack_designs([designs.PAPER_DESIGNS[n]() for n in names])
    arrays = [wl.with_bits(paper_workloads.paper_bits(n, "resnet18", len(wl))).as_arrays() for n in names]
    layers = {f: np.stack([a[f] for a in arrays]) for f in cost.LAYER_FIELDS}
    batch = cost.evaluate_batch(stacked, cost.pad_layers(layers, 32))
    for i, n in enumerate(names):
        single = cost.evaluate_jit(designs.PAPER_DESIGNS[n](), arrays[i])
        for key in ("cycles", "energy_pj", "area_mm2"):
            assert float(batch[key][i]) == pytest.approx(float(single[key]), rel=1e-5)


def test_sweep_matches_pointwise_and_pareto_is_nondominated():
    wl = paper_workloads.resnet18()
    pts = sweep.grid(rows=(8, 32), cols=(16, 64), buffer_kib=(32, 128), bits=(4, 8))
    out = {k: np.asarray(v) for k, v in sweep.sweep_points(wl, **pts).items()}
    i = 5
    base = designs.make_design(rows=32, cols=32, pmax=8, pmin=2)  # the sweep's default base design
    d = base.replace(
        rows=pts["rows"][i],
        cols=pts["cols"][i],
        wbuf_kib=pts["buffer_kib"][i],
        obuf_kib=pts["buffer_kib"][i],
        ibuf_kib=2 * pts["buffer_kib"][i],
    )
    single = cost.evaluate_jit(d, wl.with_bits(lambda g: int(pts["bits"][i])).as_arrays())
    assert out["cycles"][i] == pytest.approx(float(single["cycles"]), rel=1e-5)
    mask = sweep.pareto_mask(out["latency_s"], out["energy_pj"], out["area_mm2"])
    objs = np.stack([out["latency_s"], out["energy_pj"], out["area_mm2"]], 1)
    for a in range(len(objs)):  # brute force: a point is on the front iff nothing dominates it
        dominated = any(np.all(objs[b] <= objs[a]) and np.any(objs[b] < objs[a]) for b in range(len(objs)))
        assert mask[a] == (not dominated)


def test_latency_gradient_is_finite_and_search_improves():
    wl = paper_workloads.resnet18()
    layers = cost.layer_arrays(wl)
    base = designs.make_design(rows=32, cols=32)

    def latency(r, c, b):
        return cost.evaluate(base.replace(rows=r, cols=c, wbuf_kib=b), layers, relaxed=True)["latency_s"]

    grads = jax.jit(jax.grad(latency, argnums=(0, 1, 2)))(24.0, 40.0, 100.0)
    assert all(np.isfinite(float(g)) for g in grads)
    assert float(grads[0]) < 0 and float(grads[1]) < 0  # more PEs, less latency
    result = sweep.grad_design_search(wl, sweep.SearchConfig(steps=10, learning_rate=0.1))
    assert result["history"][-1]["objective"] < result["history"][0]["objective"]
    assert result["exact"]["area_mm2"] <= 1.1 * result["config"]["area_budget_mm2"]
    assert result["within_area_budget"] == (result["exact"]["area_mm2"] <= result["config"]["area_budget_mm2"])


def test_a_search_over_its_budget_says_so():
    """A budget far below the smallest design the search can reach: reported as violated."""
    import dataclasses

    from frugal.scripts.systems.accel.config import SWEEP_PRESETS
    from frugal.scripts.systems.accel.design_sweep import run_sweep, sweep_markdown

    config = dataclasses.replace(SWEEP_PRESETS["quick"], search=sweep.SearchConfig(steps=2, area_budget_mm2=1e-3))
    figures = run_sweep(config)
    result = figures["search"]
    assert not result["within_area_budget"]
    assert result["area_over_budget_mm2"] == pytest.approx(result["exact"]["area_mm2"] - 1e-3)
    assert "over its area budget" in sweep_markdown(figures)


def test_sweep_validation():
    with pytest.raises(ValueError, match="same number"):
        sweep.sweep_points(paper_workloads.resnet18(), rows=[8, 16], cols=[8], buffer_kib=[32], bits=[4])
    with pytest.raises(ValueError, match=">= 1"):
        sweep.sweep_points(paper_workloads.resnet18(), rows=[0], cols=[8], buffer_kib=[32], bits=[4])


def test_cli_accel_ant_and_salo_write_json(tmp_path):
    import json

    from frugal.scripts.cli import main

    assert (
        main(
            [
                "accel",
                "ant",
                "--models",
                "resnet18",
                "vit",
                "--no-trace-resnets",
                "--outdir",
                str(tmp_path),
                "--json",
                str(tmp_path / "ant.json"),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "ant.json").read_text())
    assert {r["model"] for r in data["rows"]} == {"ResNet18", "ViT"}
    assert (
        main(
            [
                "accel",
                "salo",
                "--cpu-workloads",
                "--fixed-point-seq",
                "32",
                "--outdir",
                str(tmp_path),
                "--json",
                str(tmp_path / "salo.json"),
            ]
        )
        == 0
    )
    salo = json.loads((tmp_path / "salo.json").read_text())
    assert [r["cycles"] for r in salo["cycles"]] == [4_030_495, 771_487, 196_831]
    assert main(["accel", "ant", "--batch", "0", "--outdir", str(tmp_path)]) == 2


def test_accel_presets_flags_and_tour_section(tmp_path):
    """Flags come from the config fields; a preset plus a flag gives the preset with that one field changed."""
    from frugal.scripts import cli
    from frugal.scripts.systems.accel.config import SWEEP_PRESETS

    parser = cli.build_parser()
    args = parser.parse_args(["accel", "sweep", "--preset", "quick", "--bits", "8", "--search-steps", "3"])
    config = args._command  # the Command; rebuild the config the way run() does
    from frugal.scripts.configs import config_from_flags
    from frugal.scripts.systems.accel.config import SweepConfig

    built = config_from_flags(args, SweepConfig, SWEEP_PRESETS)
    assert built.bits == (8,) and built.search.steps == 3
    assert built.rows == SWEEP_PRESETS["quick"].rows
    assert config.path == ("accel", "sweep")
    # a bad value names the flag given
    assert cli.main(["accel", "sweep", "--rows", "0", "--outdir", str(tmp_path)]) == 2
