"""Experiments of the accelerator cost model: the ANT table, SALO, sweeps and design search.

Each `run_*` takes a frozen config and returns a plain dict of figures; the `frugal accel ...`
commands and the tour call them. The paper's numbers are stored here so every report prints them
beside ours.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from accel import cost, designs, paper_workloads, salo, sweep
from accel.workload import Workload, trace_workload

# Speedup / energy ratio of each design over ANT-OS (X / ANT), from ant_simulator/results/ant_res.csv
# (papers/ant-aquant-nested-ad.md section 2.8).
ANT_PAPER_RATIOS = {
    "vgg16": {"BitFusion": (3.80, 3.11), "OLAccel": (3.95, 2.07), "AdaFloat": (5.00, 3.57), "BiScaled": (1.90, 1.75)},
    "resnet18": {"BitFusion": (3.00, 2.67), "OLAccel": (3.91, 2.10), "AdaFloat": (4.35, 3.33)},
    "resnet50": {"BitFusion": (2.45, 2.14), "OLAccel": (3.82, 2.18), "AdaFloat": (4.55, 3.54),
                 "BiScaled": (1.73, 1.68)},
    "inceptionv3": {"BitFusion": (2.24, 2.00), "OLAccel": (3.24, 1.76), "AdaFloat": (4.00, 2.97)},
    "vit": {"BitFusion": (2.34, 2.17), "OLAccel": (2.17, 1.40), "AdaFloat": (2.86, 2.50)},
    "bert_mnli": {"BitFusion": (2.88, 2.53), "OLAccel": (3.12, 1.90), "AdaFloat": (4.00, 3.30)},
    "bert_cola": {"BitFusion": (3.31, 2.90), "OLAccel": (3.00, 1.84), "AdaFloat": (3.85, 3.23)},
    "bert_sst2": {"BitFusion": (3.00, 2.54), "OLAccel": (3.71, 2.19), "AdaFloat": (4.76, 3.85)},
}
ANT_PAPER_MEANS = {"BitFusion": (2.80, 2.53), "OLAccel": (3.24, 1.93), "AdaFloat": (4.00, 3.33),
                   "BiScaled": (1.48, 1.60)}
BASELINES = ("BitFusion", "OLAccel", "AdaFloat", "BiScaled")


@dataclasses.dataclass(frozen=True)
class AntConfig:
    """Settings of the ANT table reproduction."""

    models: tuple[str, ...] = paper_workloads.MODELS
    batch: int = 64
    trace_resnets: bool = True  # take ResNet-18/50 from a trace of models.resnet instead of the hand list

    def __post_init__(self):
        unknown = set(self.models) - set(paper_workloads.MODELS)
        if unknown or not self.models:
            raise ValueError(f"models={self.models!r}: choose from {paper_workloads.MODELS}")
        if self.batch < 1:
            raise ValueError(f"batch={self.batch} must be >= 1")


def traced_resnet(name: str) -> Workload:
    """ResNet-18/50 from `models.resnet`, traced at 224x224 without materialising weights."""
    from flax import nnx

    from models import resnet

    builder = {"resnet18": resnet.resnet18, "resnet50": resnet.resnet50}[name]
    graphdef, state = nnx.split(nnx.eval_shape(lambda: builder(rngs=nnx.Rngs(0))))

    def apply(params, images):
        model = nnx.merge(graphdef, params)
        model.eval()
        return model(images)

    return trace_workload(apply, state, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32), param_argnums=(0,))


def _model_workload(model: str, trace_resnets: bool) -> tuple[Workload, str]:
    if trace_resnets and model in ("resnet18", "resnet50"):
        traced = traced_resnet(model)
        hand = paper_workloads.paper_workload(model)
        same = [(a.m, a.n, a.k) for a in traced.gemms] == [(b.m, b.n, b.k) for b in hand.gemms]
        if not same:
            raise RuntimeError(f"traced {model} differs from the ANT layer list; check models.resnet")
        return traced, "traced from models.resnet"
    return paper_workloads.paper_workload(model), "layer list"


def run_ant(config: AntConfig = AntConfig()) -> dict:
    """Reproduces ANT's normalized speedup/energy table (ANT-OS vs BitFusion, OLAccel, AdaFloat, BiScaled)."""
    start = time.perf_counter()
    results: dict[str, dict] = {}
    sources = {}
    depth = 128  # every workload padded to one depth: two compilations (OS, WS) serve the whole table
    for model in config.models:
        workload, sources[model] = _model_workload(model, config.trace_resnets)
        workload = workload.with_batch(config.batch)
        depth = max(depth, len(workload))
        results[model] = {}
        for dataflow in ("os", "ws"):
            names = [n for n, make in designs.PAPER_DESIGNS.items() if make().dataflow == dataflow]
            stacked = designs.stack_designs([designs.PAPER_DESIGNS[n]() for n in names])
            per_design = [workload.with_bits(paper_workloads.paper_bits(n, model, len(workload))).as_arrays()
                          for n in names]
            layers = {f: np.stack([p[f] for p in per_design]) for f in cost.LAYER_FIELDS}
            totals = cost.evaluate_batch(stacked, cost.pad_layers(layers, depth))
            for i, name in enumerate(names):
                results[model][name] = {k: float(v[i]) for k, v in totals.items()}

    rows = []
    worst = 0.0
    for model in config.models:
        ant = results[model]["ANT-OS"]
        row = {"model": paper_workloads.MODEL_LABELS[model], "source": sources[model]}
        for name in BASELINES:
            other = results[model][name]
            ours = (other["cycles"] / ant["cycles"], other["energy_pj"] / ant["energy_pj"])
            paper = ANT_PAPER_RATIOS[model].get(name)
            row[name] = {"speedup": ours[0], "energy": ours[1],
                         "paper_speedup": paper[0] if paper else None, "paper_energy": paper[1] if paper else None}
            if paper:
                worst = max(worst, abs(ours[0] / paper[0] - 1), abs(ours[1] / paper[1] - 1))
        row["ant_ws_vs_os_energy"] = results[model]["ANT-WS"]["energy_pj"] / ant["energy_pj"]
        row["ant_utilization"] = ant["utilization"]
        rows.append(row)

    # the paper's mean row: mean over models of values normalized to AdaFloat, then the ratio; BiScaled's
    # energy mean covers only VGG16 and ResNet50 (the models it reports), as in run_ant.py
    def normalized(model, name, key):
        return results[model][name][key] / results[model]["AdaFloat"][key]

    means = {}
    worst_mean = 0.0
    for name in BASELINES:
        energy_models = [m for m in config.models if name != "BiScaled" or m in ("vgg16", "resnet50")] or config.models
        speed = np.mean([normalized(m, name, "cycles") for m in config.models]) / np.mean(
            [normalized(m, "ANT-OS", "cycles") for m in config.models])
        energy = np.mean([normalized(m, name, "energy_pj") for m in energy_models]) / np.mean(
            [normalized(m, "ANT-OS", "energy_pj") for m in config.models])
        paper = ANT_PAPER_MEANS[name]
        means[name] = {"speedup": float(speed), "energy": float(energy), "paper_speedup": paper[0],
                       "paper_energy": paper[1]}
        if set(config.models) == set(paper_workloads.MODELS):
            worst_mean = max(worst_mean, abs(speed / paper[0] - 1), abs(energy / paper[1] - 1))

    # type-aware PE energy: ANT's PEs decode int/flint/PoT; the reference charges every type the same.
    # With our documented "estimated" decoder factors (flint +6%) on every ANT PE, the mean energy
    # ratios move by the amounts below.
    from accel.energy import TYPE_ENERGY_FACTORS

    flint = TYPE_ENERGY_FACTORS["estimated"]["flint"]
    type_aware = {}
    for name in BASELINES:
        ant_energy = []
        for m in config.models:
            r = results[m]["ANT-OS"]
            scaled = r["energy_pj"] + (flint - 1.0) * _core_dynamic_pj(r)
            ant_energy.append(scaled / results[m]["AdaFloat"]["energy_pj"])
        energy_models = [m for m in config.models if name != "BiScaled" or m in ("vgg16", "resnet50")] or config.models
        other = np.mean([normalized(m, name, "energy_pj") for m in energy_models])
        type_aware[name] = float(other / np.mean(ant_energy))

    breakdown = {}
    for model in config.models:
        total = results[model]["AdaFloat"]["energy_pj"]
        breakdown[model] = {name: {term: results[model][name][f"energy_{term}_pj"] / total
                                   for term in ("static", "dram", "buffer", "core")}
                            for name in designs.PAPER_DESIGNS}
    return {
        "config": dataclasses.asdict(config),
        "rows": rows,
        "means": means,
        "worst_model_deviation": worst,
        "worst_mean_deviation": worst_mean,
        "energy_breakdown_normalized_to_adafloat": breakdown,
        "mean_energy_ratio_type_aware_flint": type_aware,
        "raw": results,
        "seconds": time.perf_counter() - start,
        "notes": [
            "Ratios are X / ANT-OS (speedup = cycles ratio, energy = total energy ratio), batch 64, 500 MHz.",
            "Paper values computed from ant_simulator/results/ant_res.csv; its 'Geomean' row is an arithmetic "
            "mean of AdaFloat-normalized values, reproduced the same way.",
            "DRAM traffic uses a floor of 0.70 x interface bandwidth x compute cycles to match the reference "
            "simulator's tiling (designs.REFERENCE_DRAM_BUSY_FRACTION); without it our energy ratios are "
            "5-13% lower.",
        ],
    }


def _core_dynamic_pj(result: dict) -> float:
    """The dynamic part of the core energy (the part a decoder factor scales)."""
    design = designs.ant_design()
    pes = float(design.rows * design.cols)
    busy = result["cycles"] - result["stall_cycles"]
    return pes * busy * float(design.pe_dynamic_pj)


def ant_markdown(figures: dict) -> str:
    lines = ["# ANT reproduction: speedup / energy ratio of each baseline over ANT-OS", "",
             "ours (paper) for each cell; batch 64, 500 MHz, 128/256/128 KiB buffers, 1024-bit DRAM interface.", "",
             "| model | " + " | ".join(BASELINES) + " |", "|---|" + "---|" * len(BASELINES)]
    for row in figures["rows"]:
        cells = []
        for name in BASELINES:
            c = row[name]
            paper = (f" ({c['paper_speedup']:.2f} / {c['paper_energy']:.2f})" if c["paper_speedup"] else " (n/a)")
            cells.append(f"{c['speedup']:.2f} / {c['energy']:.2f}{paper}")
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    cells = [f"{m['speedup']:.2f} / {m['energy']:.2f} ({m['paper_speedup']:.2f} / {m['paper_energy']:.2f})"
             for m in (figures["means"][n] for n in BASELINES)]
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    ws = ", ".join(f"{r['model']} {r['ant_ws_vs_os_energy']:.2f}" for r in figures["rows"])
    lines += ["", f"ANT-WS / ANT-OS energy: {ws} (paper: 1.18-1.42).", "",
              "Mean energy ratio with type-aware ANT PEs (flint decoder +6%, our estimate): "
              + ", ".join(f"{n} {v:.2f}" for n, v in figures["mean_energy_ratio_type_aware_flint"].items()) + "."]
    lines += ["", f"Largest per-model deviation from the paper: {figures['worst_model_deviation'] * 100:.1f}% "
              f"(target 15%); largest deviation of the means: {figures['worst_mean_deviation'] * 100:.1f}% "
              "(target 10%).",
              ""] + [f"- {n}" for n in figures["notes"]]
    return "\n".join(lines) + "\n"


def ant_plot(figures: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["model"] for r in figures["rows"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.2
    for ax, key, title in ((axes[0], "speedup", "speedup of ANT-OS over X"), (axes[1], "energy", "energy X / ANT-OS")):
        for i, name in enumerate(BASELINES):
            ours = [r[name][key] for r in figures["rows"]]
            paper = [r[name][f"paper_{key}"] or np.nan for r in figures["rows"]]
            x = np.arange(len(labels)) + (i - 1.5) * width
            ax.bar(x, ours, width, label=f"{name} (ours)")
            ax.scatter(x, paper, color="k", marker="_", s=80, zorder=3)
        ax.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(title + " (black ticks: paper)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- SALO -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SaloConfig:
    """Settings of the SALO reproduction."""

    cpu_workloads: tuple[str, ...] = ("vil_stage2", "vil_stage1", "longformer")
    cpu_repeats: int = 3
    gpus: tuple[str, ...] = ("V100", "A100", "H200")
    fixed_point_seq: int = 256
    fixed_point_heads: int = 4
    fixed_point_head_dim: int = 32
    fixed_point_window: int = 33
    seed: int = 0

    def __post_init__(self):
        unknown = set(self.cpu_workloads) - set(salo.SALO_WORKLOADS)
        if unknown:
            raise ValueError(f"cpu_workloads has unknown names {sorted(unknown)}; use {sorted(salo.SALO_WORKLOADS)}")
        unknown = set(self.gpus) - set(salo.GPUS)
        if unknown:
            raise ValueError(f"gpus has unknown names {sorted(unknown)}; use {sorted(salo.GPUS)}")
        if self.cpu_repeats < 1 or self.fixed_point_seq < 2 or self.fixed_point_window < 1:
            raise ValueError(f"invalid SaloConfig {self}")


# Documented error bound of the fixed-point mode against float attention, for inputs with unit
# scale (|q|, |k|, |v| up to ~4): 9-bit inputs give ~1/64 steps, the 8-segment exp2 <0.2% error.
SALO_FIXED_POINT_MAX_ABS_ERROR = 0.05


def _attention_implementation():
    """Our hybrid attention as fn(q, k, v, workload) with q, k, v [seq, heads, dim]:
    transforms.attention (banded XLA path) when importable, else the blocked jnp version here."""
    try:
        from transforms.attention import AttentionPattern, hybrid_attention  # another part of the project
    except Exception:  # missing or half-written module: fall back
        def fallback(q, k, v, w):
            return blocked_hybrid_attention(q, k, v, window=w.window, num_globals=w.num_globals)

        return "blocked banded jnp (scripts.accel_experiments)", fallback, lambda w: w.seq_len

    def pattern_of(w):
        if w.name.startswith("ViL"):  # 15x15 window over a square grid, plus the global token(s)
            side = int(round(w.seq_len ** 0.5))
            return AttentionPattern(window=int(round(w.window ** 0.5)), grid=(side, side),
                                    global_tokens=tuple(range(w.num_globals)))
        return AttentionPattern(window=w.window, global_tokens=tuple(range(w.num_globals)))

    def seq_of(w):
        return w.seq_len + (w.num_globals if w.name.startswith("ViL") else 0)

    compiled = {}

    def ours(q, k, v, w):
        if w.name not in compiled:  # one jit per workload, reused by the timing loop
            compiled[w.name] = jax.jit(functools.partial(hybrid_attention, pattern=pattern_of(w), impl="banded"))
        return compiled[w.name](q[None], k[None], v[None])[0]

    return "transforms.attention.hybrid_attention (impl='banded', jit)", ours, seq_of


@functools.partial(jax.jit, static_argnames=("window", "num_globals", "block"))
def blocked_hybrid_attention(q, k, v, *, window: int, num_globals: int = 1, block: int = 128):
    """Sliding-window + global attention computed block by block (q, k, v: [seq, heads, dim]).

    Each block of `block` queries scores the keys from block start - window//2 to block end +
    window//2 plus the global keys, so work is O(seq * (block + window)) instead of O(seq^2).
    """
    seq, heads, dim = q.shape
    pad = window // 2
    n_blocks = -(-seq // block)
    span = block + 2 * pad
    qp = jnp.pad(q, ((0, n_blocks * block - seq), (0, 0), (0, 0)))
    kp = jnp.pad(k, ((pad, n_blocks * block - seq + pad), (0, 0), (0, 0)))
    vp = jnp.pad(v, ((pad, n_blocks * block - seq + pad), (0, 0), (0, 0)))
    scale = 1.0 / np.sqrt(dim)

    def one_block(b):
        qb = jax.lax.dynamic_slice_in_dim(qp, b * block, block)
        kb = jax.lax.dynamic_slice_in_dim(kp, b * block, span)
        vb = jax.lax.dynamic_slice_in_dim(vp, b * block, span)
        qi = b * block + jnp.arange(block)[:, None]
        kj = b * block - pad + jnp.arange(span)[None, :]
        offset = kj - qi
        local = (offset >= -(window // 2)) & (offset < window - window // 2) & (kj >= num_globals) & (kj < seq)
        s_local = jnp.einsum("qhd,khd->hqk", qb, kb) * scale
        s_glob = jnp.einsum("qhd,khd->hqk", qb, k[:num_globals]) * scale
        s = jnp.concatenate([jnp.where(local[None], s_local, -jnp.inf), s_glob], axis=-1)
        p = jax.nn.softmax(s, axis=-1)
        return jnp.einsum("hqk,khd->qhd", p[..., :span], vb) + jnp.einsum("hqk,khd->qhd", p[..., span:],
                                                                          v[:num_globals])

    out = jax.lax.map(one_block, jnp.arange(n_blocks)).reshape(n_blocks * block, heads, dim)[:seq]
    if num_globals:  # global queries attend to every key
        g = jax.nn.softmax(jnp.einsum("qhd,khd->hqk", q[:num_globals], k) * scale, axis=-1)
        out = out.at[:num_globals].set(jnp.einsum("hqk,khd->qhd", g, v))
    return out


def _time_cpu(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_salo(config: SaloConfig = SaloConfig()) -> dict:
    """SALO golden cycles, energy, CPU (measured) and GPU (roofline) baselines, fixed-point error."""
    start = time.perf_counter()
    rows = []
    for key, workload in salo.SALO_WORKLOADS.items():
        at_1ghz = salo.salo_report(workload, salo.SaloArray(freq_ghz=1.0))
        at_500 = salo.salo_report(workload, salo.SaloArray(freq_ghz=0.5))
        golden = salo.SALO_GOLDEN_CYCLES[key]
        rows.append({"key": key, "workload": workload.name, "cycles": at_1ghz["cycles"], "golden_cycles": golden,
                     "cycle_error": at_1ghz["cycles"] / golden - 1, "utilization": at_1ghz["utilization"],
                     "latency_ms_1ghz": at_1ghz["latency_s"] * 1e3, "energy_mj_1ghz": at_1ghz["energy_j"] * 1e3,
                     "energy_mj_500mhz": at_500["energy_j"] * 1e3})

    impl_name, impl, seq_of = _attention_implementation()
    cpu = {}
    rng = np.random.default_rng(config.seed)
    for key in config.cpu_workloads:
        w = salo.SALO_WORKLOADS[key]
        q, k, v = (jnp.asarray(rng.standard_normal((seq_of(w), w.heads, w.head_dim)), jnp.float32) for _ in range(3))
        seconds = _time_cpu(functools.partial(impl, w=w), (q, k, v), config.cpu_repeats)
        salo_s = next(r for r in rows if r["key"] == key)["latency_ms_1ghz"] / 1e3
        cpu[key] = {"seconds": seconds, "salo_speedup": seconds / salo_s}

    gpu = {}
    for name in config.gpus:
        gpu[name] = {}
        for key, w in salo.SALO_WORKLOADS.items():
            roof = salo.gpu_roofline_seconds(w, salo.GPUS[name])
            row = next(r for r in rows if r["key"] == key)
            gpu[name][key] = dict(roof, salo_speedup=roof["seconds"] / (row["latency_ms_1ghz"] / 1e3),
                                  salo_energy_advantage=roof["energy_j_at_tdp"] / (row["energy_mj_1ghz"] / 1e3))

    # fixed-point functional mode against float attention
    keys = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    shape = (config.fixed_point_seq, config.fixed_point_heads, config.fixed_point_head_dim)
    q, k, v = (jax.random.normal(kk, shape) for kk in keys)
    ref = salo.hybrid_attention_float(q, k, v, window=config.fixed_point_window, num_globals=1)
    fixed = salo.salo_attention_fixed_point(q, k, v, window=config.fixed_point_window, num_globals=1)
    err = jnp.abs(ref - fixed)
    fixed_point = {"shape": shape, "window": config.fixed_point_window, "max_abs_error": float(err.max()),
                   "mean_abs_error": float(err.mean()), "bound": SALO_FIXED_POINT_MAX_ABS_ERROR,
                   "within_bound": bool(err.max() <= SALO_FIXED_POINT_MAX_ABS_ERROR)}

    mean_cpu = float(np.mean([c["salo_speedup"] for c in cpu.values()])) if cpu else None
    mean_gpu = {name: float(np.mean([g["salo_speedup"] for g in per.values()])) for name, per in gpu.items()}
    mean_gpu_energy = {name: float(np.mean([g["salo_energy_advantage"] for g in per.values()]))
                       for name, per in gpu.items()}
    return {"config": dataclasses.asdict(config), "cycles": rows, "cpu_implementation": impl_name, "cpu": cpu,
            "gpu_roofline": gpu, "mean_cpu_speedup": mean_cpu, "mean_gpu_speedup": mean_gpu,
            "mean_gpu_energy_advantage": mean_gpu_energy,
            "paper_speedup": dict(salo.SALO_PAPER_SPEEDUP), "fixed_point": fixed_point,
            "seconds": time.perf_counter() - start,
            "notes": ["SALO at 1 GHz (2.06 W, FreePDK45 synthesis); energy at 500 MHz uses 0.53 W (and 2x the time).",
                      "CPU: our attention on this 2-core CPU shared with other agents (noisy), float32, jit.",
                      "GPU: roofline from spec sheets, FP16, 50% of peak compute / 80% of peak bandwidth, "
                      "scores materialized as in banded PyTorch kernels; not a measurement.",
                      "The paper's 17.66x (GPU) / 89.33x (CPU) were measured against PyTorch on its own machines."]}


def salo_markdown(f: dict) -> str:
    lines = ["# SALO reproduction", "", "| workload | cycles (ours) | reference model | error | utilization | "
             "latency @1 GHz | energy @1 GHz | energy @500 MHz |", "|---|---|---|---|---|---|---|---|"]
    for r in f["cycles"]:
        lines.append(f"| {r['workload']} | {r['cycles']:,} | {r['golden_cycles']:,} | {r['cycle_error'] * 100:.3f}% | "
                     f"{r['utilization'] * 100:.1f}% | {r['latency_ms_1ghz']:.3f} ms | {r['energy_mj_1ghz']:.3f} mJ | "
                     f"{r['energy_mj_500mhz']:.3f} mJ |")
    lines += ["", f"CPU baseline: {f['cpu_implementation']}", "", "| workload | CPU time | SALO speedup |",
              "|---|---|---|"]
    for key, c in f["cpu"].items():
        lines.append(f"| {salo.SALO_WORKLOADS[key].name} | {c['seconds'] * 1e3:.1f} ms | {c['salo_speedup']:.1f}x |")
    lines += ["", "| GPU (roofline) | " + " | ".join(salo.SALO_WORKLOADS[k].name for k in salo.SALO_WORKLOADS)
              + " | mean SALO speedup |", "|---|" + "---|" * (len(salo.SALO_WORKLOADS) + 1)]
    for name, per in f["gpu_roofline"].items():
        cells = [f"{per[k]['seconds'] * 1e3:.3f} ms ({per[k]['bound']})" for k in salo.SALO_WORKLOADS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {f['mean_gpu_speedup'][name]:.2f}x |")
    cpu_mean = f["mean_cpu_speedup"]
    cpu_text = f"{cpu_mean:.1f}x" if cpu_mean is not None else "not measured"
    lines += ["", f"Mean SALO speedup: CPU {cpu_text} (paper {f['paper_speedup']['cpu']}x); GPU "
              + ", ".join(f"{n} {v:.2f}x" for n, v in f["mean_gpu_speedup"].items())
              + f" (paper {f['paper_speedup']['gpu']}x). Energy (GPU at TDP for the roofline time vs SALO at 2.06 W): "
              + ", ".join(f"{n} {v:.1f}x less on SALO" for n, v in f["mean_gpu_energy_advantage"].items()) + ".",
              "", "A roofline GPU is faster than SALO in absolute latency (SALO peaks at 2.2 TOPS in 45 nm; an A100 "
              "at 312 TFLOPS): the paper's 17.66x was measured against PyTorch implementations, whose overheads a "
              "roofline leaves out. SALO's advantage that survives is energy.", "",
              f"Fixed-point mode {f['fixed_point']['shape']}, window {f['fixed_point']['window']}: max |error| "
              f"{f['fixed_point']['max_abs_error']:.4f}, mean {f['fixed_point']['mean_abs_error']:.5f} (bound "
              f"{f['fixed_point']['bound']}).", ""] + [f"- {n}" for n in f["notes"]]
    return "\n".join(lines) + "\n"


# --- sweeps and design search ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Sweep axes, benchmark size and design-search settings (workload: ResNet-18 at batch `batch`)."""

    rows: tuple[int, ...] = (8, 16, 32, 64, 128)
    cols: tuple[int, ...] = (8, 16, 32, 64, 128)
    buffer_kib: tuple[int, ...] = (32, 64, 128, 256)
    bits: tuple[int, ...] = (2, 4, 8)
    batch: int = 1
    benchmark_points: int = 200_000
    search: sweep.SearchConfig = sweep.SearchConfig()

    def __post_init__(self):
        if not (self.rows and self.cols and self.buffer_kib and self.bits) or self.batch < 1:
            raise ValueError(f"invalid SweepConfig {self}")
        if self.benchmark_points < 1:
            raise ValueError(f"benchmark_points={self.benchmark_points} must be >= 1")


def run_sweep(config: SweepConfig = SweepConfig()) -> dict:
    """Grid sweep with its Pareto front, a design-points/s benchmark, and a gradient design search."""
    start = time.perf_counter()
    workload = paper_workloads.resnet18().with_batch(config.batch)
    points = sweep.grid(config.rows, config.cols, config.buffer_kib, config.bits)
    out = {k: np.asarray(v) for k, v in sweep.sweep_points(workload, **points).items()}
    mask = sweep.pareto_mask(out["latency_s"], out["energy_pj"], out["area_mm2"])
    table = [{"rows": float(points["rows"][i]), "cols": float(points["cols"][i]),
              "buffer_kib": float(points["buffer_kib"][i]), "bits": float(points["bits"][i]),
              "latency_ms": float(out["latency_s"][i] * 1e3), "energy_uj": float(out["energy_pj"][i] * 1e-6),
              "area_mm2": float(out["area_mm2"][i])} for i in np.flatnonzero(mask)]
    table.sort(key=lambda r: r["area_mm2"])
    bench = sweep.throughput_benchmark(workload, num_points=config.benchmark_points)

    # gradient check: d latency / d (rows, cols, buffer) through the relaxed model is finite
    layers = cost.layer_arrays(workload)
    base = designs.make_design(rows=32, cols=32)
    grad = jax.grad(lambda r, c, b: cost.evaluate(base.replace(rows=r, cols=c, wbuf_kib=b), layers,
                                                  relaxed=True)["latency_s"], argnums=(0, 1, 2))(32.0, 32.0, 128.0)
    search = sweep.grad_design_search(workload, config.search)
    return {"config": dataclasses.asdict(config), "num_points": int(len(points["rows"])),
            "pareto": table, "points": {k: v.tolist() for k, v in out.items()},
            "grid": {k: v.tolist() for k, v in points.items()}, "pareto_mask": mask.tolist(), "benchmark": bench,
            "latency_grad": {"rows": float(grad[0]), "cols": float(grad[1]), "wbuf_kib": float(grad[2])},
            "search": search, "seconds": time.perf_counter() - start,
            "notes": ["ResNet-18 (ImageNet, 224x224) workload; points/s measured on this 2-core CPU shared with "
                      "other agents (noisy); compile time excluded, first call reported separately."]}


def sweep_markdown(f: dict) -> str:
    b = f["benchmark"]
    lines = ["# Design-space sweep (ResNet-18)", "",
             f"{f['num_points']} grid points; {len(f['pareto'])} on the latency-energy-area Pareto front.", "",
             "| rows | cols | buffer KiB | bits | latency ms | energy uJ | area mm2 |", "|---|---|---|---|---|---|---|"]
    for r in f["pareto"][:25]:
        lines.append(f"| {r['rows']:.0f} | {r['cols']:.0f} | {r['buffer_kib']:.0f} | {r['bits']:.0f} | "
                     f"{r['latency_ms']:.3f} | {r['energy_uj']:.1f} | {r['area_mm2']:.2f} |")
    s = f["search"]
    lines += ["", f"Benchmark: {b['points_per_s']:,.0f} design points/s ({b['layer_evaluations_per_s']:,.0f} layer "
              f"evaluations/s; {b['num_points']:,} points in {b['best_s']:.3f} s, first call "
              f"{b['first_call_s']:.2f} s).",
              "", f"d latency / d (rows, cols, weight buffer) = ({f['latency_grad']['rows']:.3g}, "
              f"{f['latency_grad']['cols']:.3g}, {f['latency_grad']['wbuf_kib']:.3g}) s per unit (finite).", "",
              f"Gradient design search ({s['config']['steps']} Adam steps, area budget "
              f"{s['config']['area_budget_mm2']} mm2, "
              f"{s['config']['bits']}-bit): rows {s['design']['rows']:.0f}, cols {s['design']['cols']:.0f}, buffer "
              f"{s['design']['buffer_kib']:.0f} KiB -> latency {s['exact']['latency_s'] * 1e3:.3f} ms, energy "
              f"{s['exact']['energy_pj'] * 1e-6:.1f} uJ, area {s['exact']['area_mm2']:.2f} mm2 (exact model).", ""]
    lines += [f"- {n}" for n in f["notes"]]
    return "\n".join(lines) + "\n"


def sweep_plot(f: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = f["points"]
    mask = np.asarray(f["pareto_mask"])
    lat = np.asarray(pts["latency_s"]) * 1e3
    en = np.asarray(pts["energy_pj"]) * 1e-6
    area = np.asarray(pts["area_mm2"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sc = ax.scatter(lat, en, c=area, s=10, cmap="viridis", norm=matplotlib.colors.LogNorm())
    ax.scatter(lat[mask], en[mask], facecolors="none", edgecolors="r", s=40, label="Pareto (latency, energy, area)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("energy (uJ)")
    fig.colorbar(sc, label="area (mm2)")
    ax.legend(fontsize=8)
    ax.set_title("ResNet-18 design sweep")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
