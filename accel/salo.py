"""SALO: the hybrid sparse attention accelerator (DAC'22) as a cycle model, an energy model, a GPU
roofline for comparison, and a bit-accurate fixed-point functional model.

Cycle model (the reference `performance_model/performance_model.py` of sjtu-zhao-lab/SALO).
A rows x cols PE array, plus one extra PE row and column for global tokens, computes one
(query block of `rows`) x (key block of `cols` window positions) x (head) tile per iteration with a
diagonal dataflow. One iteration takes

    h (Q.K^T, h = dim / heads) + 1 (exp) + 1 (row sum) + cols (wait for the sum and the shared
    inverse module) + 1 (scale) + h (A.V)

cycles; iterations = ceil(L / rows) * ceil(w / cols) * heads, each followed by a 1-cycle flush, and
the array drains in cols + globals - 1 cycles at the end. Peak = (rows*cols + globals*rows + cols)
* 2 ops per cycle. With the reference workloads at 1 GHz this gives Longformer 4,030,495 cycles,
ViL stage 1 771,487 and ViL stage 2 196,831.

Functional model (`salo_attention_fixed_point`): Q, K, V in 9-bit signed fixed point (per-tensor
power-of-two scales), Q.K^T dot products rescaled into 18-bit saturating score registers, exp
computed as 2^x with a piecewise-linear
fraction (Softermax style), the window processed in chunks of `cols` keys whose partial results
are merged online (running max, rescaled sums and weighted sums: SALO's weighted-sum module), and
one reciprocal per row (its inverse module). The exp numerators, their sums and the weighted sums
of V are held in 32-bit registers (an 18-bit weighted-sum register would overflow for the
global rows, which sum over the whole sequence). `hybrid_attention_float` is the float reference with
the same sparsity pattern.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# --- workloads and the cycle model ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SaloWorkload:
    """A hybrid attention layer: sequence length, window, heads, model dim, global tokens."""

    name: str
    seq_len: int
    window: int
    dim: int
    heads: int
    num_globals: int = 1

    def __post_init__(self):
        for field in ("seq_len", "window", "dim", "heads"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}={getattr(self, field)} must be >= 1")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if self.num_globals < 0:
            raise ValueError(f"num_globals={self.num_globals} must be >= 0")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def gops(self) -> float:
        """Operations (GOP) as the reference counts them: QK and AV MACs x 2 plus exp/sum/scale."""
        keys = self.window + 2 * self.num_globals
        return self.seq_len * keys * (4 * self.dim + 4) / 1e9


# The reference performance model's three workloads (ViL stages use a 15x15 window on 56x56 / 28x28).
SALO_WORKLOADS = {
    "longformer": SaloWorkload("Longformer", seq_len=4096, window=512, dim=768, heads=12),
    "vil_stage1": SaloWorkload("ViL stage 1", seq_len=56 * 56, window=15 * 15, dim=384, heads=6),
    "vil_stage2": SaloWorkload("ViL stage 2", seq_len=28 * 28, window=15 * 15, dim=384, heads=6),
}
SALO_GOLDEN_CYCLES = {"longformer": 4_030_495, "vil_stage1": 771_487, "vil_stage2": 196_831}
SALO_PAPER_SPEEDUP = {"gpu": 17.66, "cpu": 89.33}
# Synthesis (FreePDK45, README of sjtu-zhao-lab/SALO): power and area at two clocks.
SALO_SYNTHESIS = {500: {"power_w": 0.53, "area_mm2": 4.56}, 1000: {"power_w": 2.06, "area_mm2": 4.28}}


@dataclasses.dataclass(frozen=True)
class SaloArray:
    """The SALO PE array: rows x cols PEs, `globals_` extra row/column PEs, clock in GHz."""

    rows: int = 32
    cols: int = 32
    globals_: int = 1
    freq_ghz: float = 1.0

    def __post_init__(self):
        if self.rows < 1 or self.cols < 1 or self.globals_ < 0 or self.freq_ghz <= 0:
            raise ValueError(f"invalid SaloArray {self}: rows, cols >= 1, globals_ >= 0, freq_ghz > 0")

    @property
    def peak_gops(self) -> float:
        return (self.rows * self.cols + self.globals_ * self.rows + self.cols) * 2 * self.freq_ghz


def salo_iteration_cycles(head_dim, cols):
    """Cycles of one iteration: h + 1 + 1 + cols + 1 + h."""
    return 2 * jnp.asarray(head_dim) + jnp.asarray(cols) + 3


def salo_cycles(seq_len, window, heads, head_dim, *, rows=32, cols=32, globals_=1):
    """Total cycles of one hybrid attention layer on SALO (jax.numpy; vmaps over any argument)."""
    iterations = (-(-jnp.asarray(seq_len) // rows)) * (-(-jnp.asarray(window) // cols)) * jnp.asarray(heads)
    return salo_iteration_cycles(head_dim, cols) * iterations + (iterations - 1) + (cols + globals_ - 1)


def salo_report(workload: SaloWorkload, array: SaloArray = SaloArray()) -> dict:
    """Cycles, latency, utilization and energy of `workload` on `array`."""
    cycles = int(
        salo_cycles(
            workload.seq_len,
            workload.window,
            workload.heads,
            workload.head_dim,
            rows=array.rows,
            cols=array.cols,
            globals_=array.globals_,
        )
    )
    latency_s = cycles / (array.freq_ghz * 1e9)
    utilization = workload.gops / (latency_s * array.peak_gops)
    clock_mhz = int(round(array.freq_ghz * 1000))
    power = SALO_SYNTHESIS.get(clock_mhz, {}).get("power_w")
    return {
        "workload": workload.name,
        "cycles": cycles,
        "latency_s": latency_s,
        "utilization": utilization,
        "gops": workload.gops,
        "peak_gops": array.peak_gops,
        "power_w": power,
        "energy_j": power * latency_s if power is not None else None,
    }


# --- GPU roofline ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """Spec-sheet peak dense FP16 tensor throughput, memory bandwidth and board power (TDP)."""

    name: str
    fp16_tflops: float
    hbm_gbps: float
    tdp_w: float


# NVIDIA data sheets: V100 SXM2 (125 TFLOPS FP16 tensor, 900 GB/s, 300 W), A100 SXM 80 GB (312, 2039,
# 400 W), H100 SXM (989 dense, 3350, 700 W), H200 SXM (989 dense, 4800, 700 W).
GPUS = {
    "V100": GpuSpec("V100", 125.0, 900.0, 300.0),
    "A100": GpuSpec("A100", 312.0, 2039.0, 400.0),
    "H100": GpuSpec("H100", 989.0, 3350.0, 700.0),
    "H200": GpuSpec("H200", 989.0, 4800.0, 700.0),
}


def gpu_roofline_seconds(
    workload: SaloWorkload,
    gpu: GpuSpec,
    *,
    bytes_per_value: int = 2,
    compute_efficiency: float = 0.5,
    bandwidth_efficiency: float = 0.8,
    materialize_scores: bool = True,
) -> dict:
    """Roofline time of a hybrid attention layer on a GPU, from spec-sheet peaks.

    FLOPs: Q.K^T and A.V over window + global keys (2 FLOPs per MAC). Bytes: Q, K, V and the output
    once, plus (materialize_scores=True, as the banded PyTorch implementations SALO compared with do)
    the score matrix written, read and written again by the softmax and read by A.V. The
    efficiencies are the fractions of peak a sparse banded kernel reaches (assumptions, stated in
    the report).
    """
    if not 0 < compute_efficiency <= 1 or not 0 < bandwidth_efficiency <= 1:
        raise ValueError("compute_efficiency and bandwidth_efficiency must be in (0, 1]")
    keys = workload.window + 2 * workload.num_globals
    flops = 4.0 * workload.seq_len * keys * workload.dim
    values = 4.0 * workload.seq_len * workload.dim
    if materialize_scores:
        values += 4.0 * workload.seq_len * keys * workload.heads
    bytes_moved = values * bytes_per_value
    t_compute = flops / (gpu.fp16_tflops * 1e12 * compute_efficiency)
    t_memory = bytes_moved / (gpu.hbm_gbps * 1e9 * bandwidth_efficiency)
    seconds = max(t_compute, t_memory)
    return {
        "gpu": gpu.name,
        "flops": flops,
        "bytes": bytes_moved,
        "compute_s": t_compute,
        "memory_s": t_memory,
        "seconds": seconds,
        "bound": "compute" if t_compute >= t_memory else "memory",
        "energy_j_at_tdp": seconds * gpu.tdp_w,
    }


# --- hybrid attention: float reference and bit-accurate fixed point -------------------------------


def hybrid_key_indices(seq_len: int, window: int, num_globals: int, dilation: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Key indices [seq_len, n_keys] and validity mask of each query under the hybrid pattern.

    Query i attends to keys i + d*j for j in [-window//2, window - window//2) (sliding window with
    dilation d), plus the `num_globals` global tokens 0..g-1; global queries attend to every key.
    Duplicates (a global token inside the window) are masked so each key counts once.
    """
    if window < 1 or seq_len < 1 or dilation < 1 or num_globals < 0:
        raise ValueError("seq_len, window and dilation must be >= 1 and num_globals >= 0")
    offsets = (np.arange(window) - window // 2) * dilation
    positions = np.arange(seq_len)[:, None] + offsets[None, :]
    valid = (positions >= 0) & (positions < seq_len)
    glob = np.broadcast_to(np.arange(num_globals)[None, :], (seq_len, num_globals))
    in_window_global = valid & (positions < num_globals)
    valid = valid & ~in_window_global  # the global columns below already cover these keys
    idx = np.concatenate([np.clip(positions, 0, seq_len - 1), glob], axis=1)
    mask = np.concatenate([valid, np.ones((seq_len, num_globals), bool)], axis=1)
    return idx.astype(np.int32), mask


def hybrid_attention_mask(seq_len: int, window: int, num_globals: int, dilation: int = 1) -> np.ndarray:
    """Dense boolean [seq_len, seq_len] mask of the hybrid pattern (rows: queries)."""
    idx, valid = hybrid_key_indices(seq_len, window, num_globals, dilation)
    mask = np.zeros((seq_len, seq_len), bool)
    rows = np.repeat(np.arange(seq_len), idx.shape[1])
    mask[rows[valid.ravel()], idx.ravel()[valid.ravel()]] = True
    mask[:num_globals, :] = True
    return mask


@functools.partial(jax.jit, static_argnames=("window", "num_globals", "dilation"))
def hybrid_attention_float(q, k, v, *, window: int, num_globals: int = 1, dilation: int = 1):
    """Float reference: softmax(q k^T / sqrt(h)) v under the hybrid mask. q, k, v: [seq, heads, h]."""
    seq, _, h = q.shape
    mask = jnp.asarray(hybrid_attention_mask(seq, window, num_globals, dilation))
    scores = jnp.einsum("qhd,khd->hqk", q, k) / math.sqrt(h)
    scores = jnp.where(mask[None], scores, -jnp.inf)
    return jnp.einsum("hqk,khd->qhd", jax.nn.softmax(scores, axis=-1), v)


@dataclasses.dataclass(frozen=True)
class FixedPointFormat:
    """Bit widths of SALO's datapath."""

    input_bits: int = 9  # Q, K, V (signed)
    acc_bits: int = 18  # score and weighted-sum registers (signed, saturating)
    frac_bits: int = 10  # fraction bits of scores / exponent arguments inside the accumulator
    exp_segments: int = 8  # linear segments of 2^f on f in [0, 1)
    chunk: int = 32  # keys per iteration (the array's column count)

    def __post_init__(self):
        if not 2 <= self.input_bits <= 16 or not self.input_bits < self.acc_bits <= 31:
            raise ValueError(f"invalid bit widths in {self}: need 2 <= input_bits < acc_bits <= 31")
        if not 0 < self.frac_bits < self.acc_bits - 2 or self.exp_segments < 1 or self.chunk < 1:
            raise ValueError(f"invalid FixedPointFormat {self}")


def _quantize(x, bits: int):
    """Symmetric per-tensor fixed point: integer values and the power-of-two scale they carry."""
    max_int = 2 ** (bits - 1) - 1
    amax = jnp.maximum(jnp.max(jnp.abs(x)), 1e-12)
    frac = jnp.floor(jnp.log2(max_int / amax))  # power-of-two scale, as a fixed-point datapath uses
    scale = 2.0**frac
    return jnp.clip(jnp.round(x * scale), -max_int - 1, max_int).astype(jnp.int32), scale


def _saturate(x, bits: int):
    limit = 2 ** (bits - 1)
    return jnp.clip(x, -limit, limit - 1)


def _mul_shift(a, r, shift: int):
    """floor(a * r / 2**shift) in int32 without overflowing the intermediate product (r >= 0):
    a is split into high and low parts, as a hardware multiplier with a narrower output would."""
    a = jnp.asarray(a, jnp.int32)
    r = jnp.asarray(r, jnp.int32)
    high = jnp.right_shift(a, shift)
    low = jnp.bitwise_and(a, (1 << shift) - 1)
    return high * r + jnp.right_shift(low * r, shift)


def _exp2_fixed(x_fixed, fmt: FixedPointFormat):
    """2^x for x <= 0 in fixed point (frac_bits), piecewise linear in the fraction; returns a
    fixed-point value with frac_bits fraction bits (so 1.0 == 2**frac_bits)."""
    one = 1 << fmt.frac_bits
    integer = jnp.floor_divide(x_fixed, one)  # <= 0
    fraction = x_fixed - integer * one  # in [0, one)
    seg_width = one // fmt.exp_segments
    seg = jnp.minimum(fraction // max(seg_width, 1), fmt.exp_segments - 1)
    # the segment's endpoints are exact powers of two, rounded once to the fixed-point grid
    knots = np.round(2.0 ** (np.arange(fmt.exp_segments + 1) / fmt.exp_segments) * one).astype(np.int64)
    lo = jnp.asarray(knots[:-1], jnp.int32)[seg]
    hi = jnp.asarray(knots[1:], jnp.int32)[seg]
    within = fraction - seg * seg_width
    mantissa = lo + ((hi - lo) * within) // max(seg_width, 1)  # in [one, 2*one)
    shift = jnp.clip(-integer, 0, 30)
    return jnp.right_shift(mantissa, shift)


@functools.partial(jax.jit, static_argnames=("window", "num_globals", "dilation", "fmt"))
def salo_attention_fixed_point(
    q, k, v, *, window: int, num_globals: int = 1, dilation: int = 1, fmt: FixedPointFormat = FixedPointFormat()
):
    """SALO's datapath on q, k, v [seq, heads, h] (float in, float out), bit-accurate in integers.

    Per query row: scores of the keys in each chunk of `fmt.chunk` window positions are integer
    dot products of 9-bit values, rescaled into an 18-bit register with frac_bits fraction bits;
    the chunk's running max, sum of 2^(s - max) and weighted sum of V are merged with the previous
    chunks' (rescaling the older partial results by 2^(old_max - new_max), SALO's weighted-sum
    module); the row ends with one reciprocal of the sum.
    """
    seq, heads, h = q.shape
    qi, q_scale = _quantize(q, fmt.input_bits)
    ki, k_scale = _quantize(k, fmt.input_bits)
    vi, v_scale = _quantize(v, fmt.input_bits)
    idx, valid = hybrid_key_indices(seq, window, num_globals, dilation)

    def padded(indices, mask):
        width = -(-indices.shape[1] // fmt.chunk) * fmt.chunk
        pad = ((0, 0), (0, width - indices.shape[1]))
        return jnp.asarray(np.pad(indices, pad)), jnp.asarray(np.pad(mask, pad))

    # score = q.k / sqrt(h) in fixed point with frac_bits, log2(e) folded in so exp becomes 2^x
    real_per_unit = 1.0 / (q_scale * k_scale * math.sqrt(h)) * math.log2(math.e)
    score_mult = jnp.round(real_per_unit * (1 << fmt.frac_bits) * (1 << 16)).astype(jnp.int32)  # 16 frac bits
    one = 1 << fmt.frac_bits
    neg_big = -(2 ** (fmt.acc_bits - 1))

    def row(q_row, keys_idx, keys_valid):  # q_row [heads, h]; keys_idx, keys_valid [n_keys]
        k_rows = ki[keys_idx]  # [pad_to, heads, h]
        v_rows = vi[keys_idx]
        # integer dot products computed in float32: exact, every partial sum stays below 2**24
        dots = jnp.einsum("hd,khd->kh", q_row.astype(jnp.float32), k_rows.astype(jnp.float32)).astype(jnp.int32)
        scores = _mul_shift(dots, score_mult, 16)
        scores = _saturate(jnp.floor(scores).astype(jnp.int32), fmt.acc_bits)
        scores = jnp.where(keys_valid[:, None], scores, neg_big)
        n_chunks = keys_idx.shape[0] // fmt.chunk
        scores = scores.reshape(n_chunks, fmt.chunk, heads)
        v_chunks = v_rows.reshape(n_chunks, fmt.chunk, heads, h)
        mask_chunks = keys_valid.reshape(n_chunks, fmt.chunk)

        def merge(carry, chunk):
            run_max, run_sum, run_acc = carry
            s, vv, m = chunk
            c_max = jnp.max(s, axis=0)
            new_max = jnp.maximum(run_max, c_max)
            p = _exp2_fixed(s - new_max[None, :], fmt) * m[:, None]  # [chunk, heads], 1.0 == one
            c_sum = jnp.sum(p, axis=0)
            # weighted sum of 9-bit V (float32 einsum, exact: products < 2**18, 32 terms)
            c_acc = jnp.einsum("kh,khd->hd", p.astype(jnp.float32), vv.astype(jnp.float32)).astype(jnp.int32)
            rescale = _exp2_fixed(run_max - new_max, fmt)  # 2^(old - new) <= 1
            run_sum = _mul_shift(run_sum, rescale, fmt.frac_bits) + c_sum
            run_acc = _mul_shift(run_acc, rescale[:, None], fmt.frac_bits) + c_acc
            return (new_max, run_sum, run_acc), None

        init = (
            jnp.full((heads,), neg_big, jnp.int32),
            jnp.zeros((heads,), jnp.int32),
            jnp.zeros((heads, h), jnp.int32),
        )
        (_, total, acc), _ = jax.lax.scan(merge, init, (scores, v_chunks, mask_chunks))
        # inverse module: one reciprocal per row in fixed point (frac_bits), then a multiply
        inverse = (one * one * 16) // jnp.maximum(total, 1)  # 4 guard bits
        out = _mul_shift(acc, inverse[:, None], fmt.frac_bits + 4)  # V units with frac_bits fraction bits
        return out

    out = jax.vmap(row)(qi, *padded(idx, valid))
    if num_globals:
        # global queries attend to every key: same datapath over the whole sequence
        all_idx = np.broadcast_to(np.arange(seq, dtype=np.int32), (num_globals, seq))
        glob = jax.vmap(row)(qi[:num_globals], *padded(all_idx, np.ones_like(all_idx, bool)))
        out = out.at[:num_globals].set(glob)
    return out.astype(jnp.float32) / (one * v_scale)
