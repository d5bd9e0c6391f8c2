"""Cycles, energy and area of a workload on a design: the cost model's evaluation step.

Per GEMM layer (arrays from `Workload.as_arrays()`):
- compute cycles: `scaled_gemm_cycles` (SCALE-Sim folding on a precision-scalable array) x count;
- DRAM traffic and stalls: `frugal.accel.memory`; total cycles = compute + stalls;
- energy, split the way the ANT simulator reports it (`stats.get_energy_breakdown`):
    static = cycles * static energy per cycle
    dram   = read bits * pJ/bit + write bits * pJ/bit
    buffer = SRAM reads and writes * pJ/bit (output stationary: every MAC reads its activation and
             weight bits from SRAM; weight stationary: every MAC reads the activation and reads and
             writes a 16-bit partial sum; DRAM fills are SRAM writes)
    core   = PEs * (cycles * leakage + busy cycles * dynamic energy per PE-cycle)
- area: PEs * PE area + SRAM capacity * area per KiB.

Energy is a sum over layers, so the energy of a network is the sum of its layers' energies.
Everything is jax.numpy: `evaluate` vmaps over stacked designs and `jax.grad` flows through
`relaxed=True` (straight-through ceilings, softplus stalls).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from frugal.accel.designs import Design
from frugal.accel.energy import OUTPUT_BITS
from frugal.accel.memory import dram_traffic_bits, memory_cycles, stall_cycles
from frugal.accel.systolic import scaled_gemm_cycles
from frugal.accel.workload import Workload

LAYER_FIELDS = ("m", "n", "k", "count", "a_bits", "w_bits", "a_elems", "w_elems", "o_elems")


def layer_arrays(workload: Workload | dict) -> dict[str, jax.Array]:
    """The per-layer float32 arrays of a Workload (or a dict already holding them)."""
    arrays = workload.as_arrays() if isinstance(workload, Workload) else workload
    missing = [f for f in LAYER_FIELDS if f not in arrays]
    if missing:
        raise ValueError(f"layer arrays are missing {missing}; expected {LAYER_FIELDS}")
    return {f: jnp.asarray(arrays[f], jnp.float32) for f in LAYER_FIELDS}


def layer_costs(design: Design, layers: dict, *, relaxed: bool = False) -> dict[str, jax.Array]:
    """Per-layer cycles, stalls, traffic and the four energy terms (pJ) of `layers` on `design`."""
    d = design
    m, n, k, count = layers["m"], layers["n"], layers["k"], layers["count"]
    a_bits, w_bits = layers["a_bits"], layers["w_bits"]
    compute = count * scaled_gemm_cycles(
        m,
        n,
        k,
        rows=d.rows,
        cols=d.cols,
        a_bits=a_bits,
        w_bits=w_bits,
        pmax=d.pmax,
        pmin=d.pmin,
        dataflow=d.dataflow,
        fill_drain=d.fill_drain,
        relaxed=relaxed,
    )
    reads, writes, act_fill, wgt_fill = dram_traffic_bits(
        m,
        n,
        k,
        w_elems=layers["w_elems"],
        o_elems=layers["o_elems"],
        a_bits=a_bits,
        w_bits=w_bits,
        ibuf_kib=d.ibuf_kib,
        wbuf_kib=d.wbuf_kib,
        count=count,
        relaxed=relaxed,
    )
    # traffic floor of the reference simulator's tiling (see designs.REFERENCE_DRAM_BUSY_FRACTION)
    floor_bits = d.dram_busy_fraction * d.if_width_bits * compute
    reads = jnp.maximum(reads, floor_bits - writes)
    mem = memory_cycles(reads, writes, if_width_bits=d.if_width_bits)
    stalls = stall_cycles(compute, mem, relaxed=relaxed)
    cycles = compute + stalls
    macs = m * n * k * count

    outputs = layers["o_elems"] * OUTPUT_BITS
    buffer = act_fill * d.ibuf_write_pj_bit + wgt_fill * d.wbuf_write_pj_bit
    if design.dataflow == "os":
        buffer = buffer + macs * (a_bits * d.ibuf_read_pj_bit + w_bits * d.wbuf_read_pj_bit)
        buffer = buffer + outputs * (d.obuf_read_pj_bit + d.obuf_write_pj_bit)
    else:
        # the stationary operand is read once per fold; partial sums travel through SRAM every MAC
        buffer = buffer + macs * (
            a_bits * d.ibuf_read_pj_bit + OUTPUT_BITS * (d.obuf_read_pj_bit + d.obuf_write_pj_bit)
        )
        buffer = buffer + wgt_fill * d.wbuf_read_pj_bit
    pes = d.rows * d.cols
    return {
        "macs": macs,
        "compute_cycles": compute,
        "stall_cycles": stalls,
        "cycles": cycles,
        "dram_read_bits": reads,
        "dram_write_bits": writes,
        "energy_static_pj": cycles * d.static_nj_cycle * 1e3,
        "energy_dram_pj": reads * d.dram_read_pj_bit + writes * d.dram_write_pj_bit,
        "energy_buffer_pj": buffer,
        "energy_core_pj": pes * (cycles * d.pe_leak_pj + (cycles - stalls) * d.pe_dynamic_pj),
    }


def design_area_mm2(design: Design) -> jax.Array:
    """PE array area plus SRAM area (mixed 45 nm PE / 28 nm SRAM, as in the ANT simulator)."""
    sram_kib = design.wbuf_kib + design.ibuf_kib + design.obuf_kib
    return design.rows * design.cols * design.pe_area_um2 * 1e-6 + sram_kib * design.sram_area_mm2_per_kib


def evaluate(design: Design, workload: Workload | dict, *, relaxed: bool = False) -> dict[str, jax.Array]:
    """Totals over the workload: cycles, latency (s), energy terms and total (pJ), area (mm^2), MACs."""
    per_layer = layer_costs(design, layer_arrays(workload), relaxed=relaxed)
    totals = {key: jnp.sum(value) for key, value in per_layer.items()}
    totals["energy_pj"] = (
        totals["energy_static_pj"] + totals["energy_dram_pj"] + totals["energy_buffer_pj"] + totals["energy_core_pj"]
    )
    totals["latency_s"] = totals["cycles"] / (design.freq_mhz * 1e6)
    totals["area_mm2"] = design_area_mm2(design)
    # MACs per PE-cycle: up to (pmax / pmin)^2 on a precision-scalable array running narrow operands
    totals["utilization"] = totals["macs"] / jnp.maximum(totals["cycles"] * design.rows * design.cols, 1.0)
    return totals


def pad_layers(layers: dict, length: int) -> dict[str, jax.Array]:
    """Pads per-layer arrays to `length` with empty layers (count 0), so workloads of different
    depths share one compiled evaluation."""
    layers = layer_arrays(layers)
    current = int(layers["m"].shape[-1])
    if length < current:
        raise ValueError(f"length={length} is shorter than the workload ({current} layers)")
    fill = {
        "m": 1.0,
        "n": 1.0,
        "k": 1.0,
        "count": 0.0,
        "a_bits": 8.0,
        "w_bits": 8.0,
        "a_elems": 0.0,
        "w_elems": 0.0,
        "o_elems": 0.0,
    }
    pad = [(0, 0)] * (layers["m"].ndim - 1) + [(0, length - current)]
    return {f: jnp.pad(v, pad, constant_values=fill[f]) for f, v in layers.items()}


def _evaluate_unnamed(design: Design, layers: dict) -> dict[str, jax.Array]:
    return evaluate(design, layers)


_evaluate_batch = jax.jit(jax.vmap(_evaluate_unnamed, in_axes=(0, 0)))


def evaluate_batch(stacked: Design, layers: dict) -> dict[str, jax.Array]:
    """Evaluates D stacked designs (one dataflow) on per-design layer arrays of shape [D, L]
    (or shared [L] arrays), in one jitted vmap. The design name is dropped so that one
    compilation serves every design set of the same shape."""
    import dataclasses

    stacked = dataclasses.replace(stacked, name="batch")
    size = int(jnp.shape(stacked.rows)[0])
    layers = {f: jnp.broadcast_to(v, (size,) + tuple(jnp.shape(v)[-1:])) for f, v in layer_arrays(layers).items()}
    return _evaluate_batch(stacked, layers)


evaluate_jit = jax.jit(evaluate, static_argnames=("relaxed",))
evaluate_jit.__doc__ = "`evaluate` under jax.jit (one compilation per design metadata and layer count)."
