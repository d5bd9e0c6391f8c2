"""On-chip buffers, DRAM traffic and bandwidth-limited stalls.

Traffic model (a blocked GEMM with double-buffered SRAMs, the same set-up as the BitFusion/ANT
simulator, which keeps half of each buffer for the tile being computed):
- an activation tile holds Tm full rows of the (im2col) A matrix in half the input buffer,
  Tm = ibuf/2 / (K * a_bits), and a weight tile Tn full columns of W in half the weight buffer;
- one operand is kept while the other streams past it, whichever order moves fewer bits:
      DRAM reads  = min(A + W * ceil(M / Tm),  W + A * ceil(N / Tn))
      DRAM writes = outputs * 16 bits
  so narrower operands cut traffic twice: fewer bits per element and larger tiles;
- memory cycles = bits / interface width; a layer stalls by max(0, memory - compute) cycles,
  the BitFusion simulator's `memory_stalls` rule (transfers overlap compute).

All functions are jax.numpy over per-layer arrays, so they vmap over design points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from frugal.accel.energy import OUTPUT_BITS
from frugal.accel.systolic import ceil_div

KIB_BITS = 8 * 1024


def operand_tiles(k, *, a_bits, w_bits, ibuf_kib, wbuf_kib, relaxed: bool = False):
    """(Tm, Tn): rows of A and columns of W whose full-K tiles fit half the input/weight buffers."""
    k = jnp.maximum(jnp.asarray(k, jnp.float32), 1.0)
    tile_m = jnp.asarray(ibuf_kib, jnp.float32) * KIB_BITS / 2 / (k * a_bits)
    tile_n = jnp.asarray(wbuf_kib, jnp.float32) * KIB_BITS / 2 / (k * w_bits)
    if not relaxed:
        tile_m, tile_n = jnp.floor(tile_m), jnp.floor(tile_n)
    return jnp.maximum(tile_m, 1.0), jnp.maximum(tile_n, 1.0)


def dram_traffic_bits(
    m, n, k, *, w_elems, o_elems, a_bits, w_bits, ibuf_kib, wbuf_kib, count=1.0, relaxed: bool = False
):
    """(read_bits, write_bits, activation_fill_bits, weight_fill_bits) of one layer, all instances.

    Activations are fetched in im2col form (M x K per instance), as the BitFusion/ANT simulator
    does. Two loop orders are possible: keep an A tile and stream all of W past it (W re-read
    ceil(M / Tm) times), or keep a W tile and stream A (A re-read ceil(N / Tn) times); the cheaper
    one is taken, as that simulator's tiling search ends up doing when compute cycles tie.
    """
    tile_m, tile_n = operand_tiles(
        k, a_bits=a_bits, w_bits=w_bits, ibuf_kib=ibuf_kib, wbuf_kib=wbuf_kib, relaxed=relaxed
    )
    count = jnp.asarray(count, jnp.float32)
    act_bits = jnp.asarray(m, jnp.float32) * k * count * a_bits
    wgt_bits = jnp.asarray(w_elems, jnp.float32) * w_bits
    w_passes = ceil_div(m, tile_m, relaxed=relaxed)
    a_passes = ceil_div(n, tile_n, relaxed=relaxed)
    keep_a = act_bits + wgt_bits * w_passes
    keep_w = wgt_bits + act_bits * a_passes
    use_keep_a = keep_a <= keep_w
    act_fill = jnp.where(use_keep_a, act_bits, act_bits * a_passes)
    wgt_fill = jnp.where(use_keep_a, wgt_bits * w_passes, wgt_bits)
    if relaxed:
        reads = -jax.nn.logsumexp(
            jnp.stack([-keep_a, -keep_w]) / jnp.maximum(jnp.minimum(keep_a, keep_w) * 1e-2, 1.0), axis=0
        ) * jnp.maximum(jnp.minimum(keep_a, keep_w) * 1e-2, 1.0)
    else:
        reads = jnp.minimum(keep_a, keep_w)
    writes = jnp.asarray(o_elems, jnp.float32) * OUTPUT_BITS
    return reads, writes, act_fill, wgt_fill


def memory_cycles(read_bits, write_bits, *, if_width_bits):
    """Cycles the DRAM interface needs for the transfers."""
    return (jnp.asarray(read_bits, jnp.float32) + write_bits) / jnp.asarray(if_width_bits, jnp.float32)


def stall_cycles(compute_cycles, mem_cycles, *, relaxed: bool = False):
    """Bandwidth-limited stalls: max(0, memory - compute) (softplus-smoothed when relaxed)."""
    gap = jnp.asarray(mem_cycles, jnp.float32) - compute_cycles
    if relaxed:
        scale = jnp.maximum(jnp.abs(compute_cycles) * 1e-3, 1.0)
        return scale * jax.nn.softplus(gap / scale)
    return jnp.maximum(gap, 0.0)
