"""Design-space sweeps (one `vmap`), Pareto fronts and gradient-based design search.

A sweep stacks design points (array rows x cols, buffer sizes, operand bit width) into one
batched `Design` plus per-point bit widths, and evaluates the whole batch in one jitted vmap of
`frugal.accel.cost.evaluate`. Design search optimises continuous (log-scale) array and buffer sizes with
`jax.grad` through the relaxed cost model (straight-through ceilings, softplus stalls), then rounds
the result and reports it with the exact model.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from frugal.accel.cost import design_area_mm2, evaluate, layer_arrays
from frugal.accel.designs import Design, make_design
from frugal.accel.workload import Workload


def _points_design(base: Design, rows, cols, wbuf, ibuf) -> Design:
    n = rows.shape[0]
    fields = {
        f.name: jnp.broadcast_to(jnp.asarray(getattr(base, f.name), jnp.float32), (n,))
        for f in dataclasses.fields(base)
        if f.name not in ("dataflow", "name")
    }
    fields.update(rows=rows, cols=cols, wbuf_kib=wbuf, ibuf_kib=ibuf, obuf_kib=wbuf)
    return Design(**fields, dataflow=base.dataflow, name="sweep")


def _evaluate_points(base_layers, design: Design, bits):
    def one(d, b):
        layers = dict(base_layers)
        layers["a_bits"] = jnp.full_like(layers["m"], b)
        layers["w_bits"] = jnp.full_like(layers["m"], b)
        out = evaluate(d, layers)
        return {k: out[k] for k in ("cycles", "energy_pj", "area_mm2", "latency_s", "utilization")}

    return jax.vmap(one)(design, bits)


_evaluate_points_jit = jax.jit(_evaluate_points)


def sweep_points(workload: Workload | dict, *, rows, cols, buffer_kib, bits, base: Design | None = None) -> dict:
    """Evaluates design points given as equal-length arrays (rows, cols, buffer KiB, bit width).

    `buffer_kib` sets the weight and output buffers; the activation buffer gets twice that (the
    ANT configuration's 1:2:1 ratio). Returns arrays of cycles, energy_pj, area_mm2, latency_s,
    utilization, one entry per point.
    """
    base = base if base is not None else make_design(rows=32, cols=32, pmax=8, pmin=2, name="sweep")
    rows, cols, buffer_kib, bits = (jnp.asarray(x, jnp.float32).reshape(-1) for x in (rows, cols, buffer_kib, bits))
    if not rows.shape == cols.shape == buffer_kib.shape == bits.shape:
        raise ValueError("rows, cols, buffer_kib and bits must have the same number of points")
    if bool(jnp.any(rows < 1)) or bool(jnp.any(cols < 1)) or bool(jnp.any(buffer_kib <= 0)) or bool(jnp.any(bits < 1)):
        raise ValueError("rows, cols and bits must be >= 1 and buffer_kib > 0")
    design = _points_design(base, rows, cols, buffer_kib, 2 * buffer_kib)
    layers = layer_arrays(workload)
    return _evaluate_points_jit(layers, design, bits)


def grid(rows=(8, 16, 32, 64, 128), cols=(8, 16, 32, 64, 128), buffer_kib=(32, 64, 128, 256), bits=(2, 4, 8)) -> dict:
    """The Cartesian product of the sweep axes as flat arrays (rows, cols, buffer_kib, bits)."""
    combos = np.array(list(itertools.product(rows, cols, buffer_kib, bits)), np.float32)
    return {"rows": combos[:, 0], "cols": combos[:, 1], "buffer_kib": combos[:, 2], "bits": combos[:, 3]}


def pareto_mask(*objectives) -> np.ndarray:
    """Boolean mask of the points no other point beats in every objective (all minimised)."""
    points = np.stack([np.asarray(o, np.float64) for o in objectives], axis=1)
    n = points.shape[0]
    mask = np.ones(n, bool)
    order = np.lexsort(points.T[::-1])
    for i in order:
        if not mask[i]:
            continue
        dominated = np.all(points >= points[i], axis=1) & np.any(points > points[i], axis=1)
        mask &= ~dominated
    return mask


def throughput_benchmark(
    workload: Workload | dict, *, num_points: int = 200_000, repeats: int = 3, seed: int = 0
) -> dict:
    """Design points evaluated per second (random points, one jitted vmap; compile time excluded)."""
    if num_points < 1 or repeats < 1:
        raise ValueError("num_points and repeats must be >= 1")
    rng = np.random.default_rng(seed)
    points = {
        "rows": rng.integers(4, 257, num_points),
        "cols": rng.integers(4, 257, num_points),
        "buffer_kib": rng.choice([16, 32, 64, 128, 256, 512], num_points),
        "bits": rng.choice([2, 4, 8], num_points),
    }
    t0 = time.perf_counter()
    jax.block_until_ready(sweep_points(workload, **points))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(sweep_points(workload, **points))
        times.append(time.perf_counter() - t0)
    best = min(times)
    n_layers = int(layer_arrays(workload)["m"].shape[0])
    return {
        "num_points": num_points,
        "layers": n_layers,
        "first_call_s": compile_s,
        "best_s": best,
        "points_per_s": num_points / best,
        "layer_evaluations_per_s": num_points * n_layers / best,
    }


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Gradient-based design search: minimise log(latency) + log(energy) under an area budget."""

    area_budget_mm2: float = 4.0
    bits: int = 4
    steps: int = 150
    learning_rate: float = 0.05
    penalty: float = 50.0
    init_rows: float = 16.0
    init_cols: float = 16.0
    init_buffer_kib: float = 64.0

    def __post_init__(self):
        if self.area_budget_mm2 <= 0 or self.steps < 1 or self.learning_rate <= 0 or self.bits < 1:
            raise ValueError(f"invalid SearchConfig {self}")


def _search_design(base: Design, theta) -> Design:
    rows, cols, buf = jnp.exp(theta[0]), jnp.exp(theta[1]), jnp.exp(theta[2])
    return base.replace(rows=rows, cols=cols, wbuf_kib=buf, obuf_kib=buf, ibuf_kib=2 * buf)


def search_objective(theta, layers, base: Design, config: SearchConfig, relaxed: bool = True):
    design = _search_design(base, theta)
    out = evaluate(design, layers, relaxed=relaxed)
    over = jax.nn.relu(design_area_mm2(design) / config.area_budget_mm2 - 1.0)
    return jnp.log(out["latency_s"]) + jnp.log(out["energy_pj"]) + config.penalty * over**2


def grad_design_search(
    workload: Workload | dict, config: SearchConfig = SearchConfig(), base: Design | None = None
) -> dict:
    """Adam on log(rows), log(cols), log(buffer KiB) through the relaxed model; exact report at the end."""
    base = base if base is not None else make_design(rows=32, cols=32, pmax=8, pmin=2, name="search")
    layers = layer_arrays(workload)
    uniform = jnp.full_like(layers["m"], config.bits)
    layers = dict(layers, a_bits=uniform, w_bits=uniform)
    theta = jnp.log(jnp.asarray([config.init_rows, config.init_cols, config.init_buffer_kib], jnp.float32))
    optimizer = optax.adam(config.learning_rate)
    state = optimizer.init(theta)
    value_and_grad = jax.jit(jax.value_and_grad(lambda t: search_objective(t, layers, base, config)))

    history = []
    for step in range(config.steps):
        value, grad = value_and_grad(theta)
        if not bool(jnp.all(jnp.isfinite(grad))):
            raise FloatingPointError(f"non-finite gradient at step {step}: {grad}")
        updates, state = optimizer.update(grad, state)
        theta = optax.apply_updates(theta, updates)
        if step % max(config.steps // 20, 1) == 0 or step == config.steps - 1:
            history.append(
                {
                    "step": step,
                    "objective": float(value),
                    "rows": float(jnp.exp(theta[0])),
                    "cols": float(jnp.exp(theta[1])),
                    "buffer_kib": float(jnp.exp(theta[2])),
                }
            )
    rounded = jnp.round(jnp.exp(theta))
    final = _search_design(base, jnp.log(rounded))
    exact = evaluate(final, layers)
    area = float(exact["area_mm2"])
    return {
        "config": dataclasses.asdict(config),
        "history": history,
        "design": {"rows": float(rounded[0]), "cols": float(rounded[1]), "buffer_kib": float(rounded[2])},
        "exact": {k: float(v) for k, v in exact.items()},
        # The budget is a penalty in the relaxed objective, so the rounded design can end above it.
        "within_area_budget": area <= config.area_budget_mm2,
        "area_over_budget_mm2": max(area - config.area_budget_mm2, 0.0),
        "objective_exact": float(search_objective(jnp.log(rounded), layers, base, config, relaxed=False)),
    }
