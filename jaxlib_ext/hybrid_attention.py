"""Block-sparse flash attention for hybrid patterns (sliding window + dilation + global tokens), in Pallas.

What the kernel does (FlashAttention-2 style, arXiv 2307.08691; forward and backward):

* Queries are cut into blocks of `block_q`; each program owns one query block of one (batch, head,
  dilation class) and runs an online softmax over key blocks. Its key loop is **bounded to the
  band**: only key blocks that intersect [q - left, q + right] are visited, so the work is
  O(n * (w + g)) instead of O(n^2).
* Global columns: a small block of global keys/values is visited first by every query block.
  Global rows: a second call of the same kernel with the global queries against all keys (no band).
  That call's key loop is **split** over up to 32 programs per (batch, head), each attending a share
  of the key blocks; XLA combines their partial softmaxes by log-sum-exp (flash-decoding). The global
  keys' dK/dV likewise split the query loop and sum the partials. A few global rows on a long sequence
  would otherwise run on batch x heads programs, each walking every block in turn.
* Dilation and heads live in the **index maps**: on GPU the caller's (batch, seq, heads, dim) arrays
  are only reshaped (free) to (batch, seq / dil, dil, heads, dim), and a tile of class c and head h is
  the strided block of rows c, c + dil, ... of that head; inside a class a dilated window is a
  contiguous band, so the kernel never sees dilation. Mosaic TPU tiles must span the array's last two
  dims, so there the arrays are transposed once to (batch, heads, dil, seq / dil, dim).
* Masks (padding, global tokens removed from the band, causal order) come in as small per-key vectors
  and positions, never as n x n arrays.
* `custom_vjp`: the forward saves the row log-sum-exp; the backward recomputes the probabilities in a dQ
  kernel (same loop as the forward) and a dK/dV kernel (grid over key blocks, looping over the query
  blocks whose band reaches them).
* Products accumulate in float32. Float32 inputs follow `jax.default_matmul_precision` (TF32 on an
  NVIDIA GPU by default, IEEE with "highest"), or bf16 operands with `precision="bfloat16"`.
* Every program writes only its own output tiles: no output block is revisited across grid steps, so
  every grid axis may run in parallel (Triton launches them so; TPU marks them "parallel").

Entry points: `hybrid_attention_pallas(...)` (layout (batch, seq, heads, head_dim)) and its pure-jnp
reference `hybrid_attention_reference(...)`. On CPU the kernel only runs with `interpret=True` (slow,
for tests); on GPU it lowers through Triton, on TPU through Mosaic. Nothing here imports the rest of the
repository. Measured on an H200: `frugal.scripts.systems.kernels` README.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

NEG = -1e30  # finite "minus infinity": masked entries never make NaNs


# ------------------------------------------------------------------------------------------------
# Reference.


def reference_mask(
    seq_len: int, window: tuple[int, int], dilation: int, global_tokens: Sequence[int], causal: bool
) -> np.ndarray:
    """The (seq, seq) boolean mask of a 1-D hybrid pattern (numpy; for tests and small n)."""
    left, right = window
    i = np.arange(seq_len)[:, None]
    j = np.arange(seq_len)[None, :]
    delta = j - i
    mask = (delta >= -left * dilation) & (delta <= right * dilation) & (delta % dilation == 0)
    is_global = np.zeros(seq_len, bool)
    is_global[list(global_tokens)] = True
    mask |= is_global[:, None] | is_global[None, :]
    if causal:
        mask &= delta <= 0
    return mask


def hybrid_attention_reference(
    q, k, v, *, window, dilation=1, global_tokens=(), causal=False, key_mask=None, global_qkv=None, scale=None
):
    """Plain jnp masked attention with the same arguments (and NaN semantics) as `hybrid_attention_pallas`."""
    _check_arguments(q, k, v, window, dilation, global_tokens, key_mask, scale)

    def call(q, k, v, global_qkv):
        return _masked_reference(q, k, v, window, dilation, global_tokens, causal, key_mask, global_qkv, scale)

    return propagate_nonfinite_values(call, q, k, v, global_qkv, global_tokens)


def _masked_reference(q, k, v, window, dilation, global_tokens, causal, key_mask, global_qkv, scale):
    batch, seq_len, heads, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    dilations = _per_head(dilation, heads)
    mask = np.stack([reference_mask(seq_len, window, d, global_tokens, causal) for d in dilations])
    mask = jnp.asarray(mask)[None]
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]

    def attend(q, k, v, mask):
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
        s = jnp.where(mask, s, NEG)
        p = jnp.where(mask, jnp.exp(s - jax.lax.stop_gradient(s.max(-1, keepdims=True))), 0.0)
        p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30)
        return jnp.einsum("bhqk,bkhd->bqhd", p, v)

    out = attend(q, k, v, mask)
    if global_qkv is not None and len(global_tokens):
        rows = np.asarray(global_tokens)
        q_g, k_g, v_g = global_qkv
        q_rows = q_g[:, rows] if q_g.shape[1] == seq_len else q_g
        out = out.at[:, rows].set(attend(q_rows, k_g, v_g, mask[:, :, rows]))
    return out


# ------------------------------------------------------------------------------------------------
# Kernels. Row vectors (lse, delta, query positions) are stored as (..., n, 1) and key vectors
# (valid flags, positions) as (..., 1, n), which keeps every block shape legal on TPU and Triton.


@dataclasses.dataclass(frozen=True)
class _Static:
    scale: float
    left: int | None  # None: no band, every key block is visited
    right: int | None
    causal: bool
    block_q: int
    block_k: int
    num_q: int  # padded query count
    num_k: int  # padded key count
    has_global: bool
    interpret: bool
    backend: str | None
    precision: str | None = None  # one of PRECISIONS (see hybrid_attention_pallas)
    splits: int = 1  # parallel programs sharing the unbanded loop (keys for forward/dQ, queries for dK/dV)
    streamed: bool = False  # Mosaic TPU: tiles stream along an "arbitrary" grid axis (see below)


# Grids are (batch, heads, dilation class, block, split); the kernels read these axes.
_BLOCK_AXIS, _SPLIT_AXIS = 3, 4
# An unbanded loop (global rows over every key, global keys over every query) is cut into splits of at
# least this many blocks, up to _MAX_SPLITS, each run by its own program; XLA combines the partials.
_BLOCKS_PER_SPLIT = 4
_MAX_SPLITS = 32


def _dot_general(st: _Static, a, b, dims):
    """a . b with float32 accumulation; "bfloat16" precision feeds float32 operands as bf16."""
    if st.precision == "bfloat16":
        a, b = (x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x for x in (a, b))
    precision = {"highest": lax.Precision.HIGHEST, "default": lax.Precision.DEFAULT}.get(st.precision)
    return lax.dot_general(a, b, (dims, ((), ())), precision=precision, preferred_element_type=jnp.float32)


def _dot_t(st, a, b):
    """a @ b.T"""
    return _dot_general(st, a, b, ((1,), (1,)))


def _dot(st, a, b):
    return _dot_general(st, a, b, ((1,), (0,)))


def _dot_tn(st, a, b):
    """a.T @ b"""
    return _dot_general(st, a, b, ((0,), (0,)))


def _split_range(num_blocks: int, splits: int, split):
    per = -(-num_blocks // splits)
    lo = split * per
    return lo, jnp.minimum(num_blocks, lo + per)


def _key_range(st: _Static, q_block, split):
    """Key blocks [lo, hi) that can hold a key in the band of query block `q_block` (or, without a
    band, this program's split of all key blocks)."""
    num_blocks = st.num_k // st.block_k
    if st.left is None:
        return _split_range(num_blocks, st.splits, split)
    first_q = q_block * st.block_q
    # lax.div truncates toward zero; negative numerators are clamped to block 0 either way, and it
    # avoids the `sign` that floor division lowers to (Mosaic TPU cannot lower that without a device).
    lo = jnp.maximum(0, lax.div(first_q - st.left, st.block_k))
    hi = jnp.minimum(num_blocks, lax.div(first_q + st.block_q - 1 + st.right, st.block_k) + 1)
    return lo, hi


def _query_range(st: _Static, k_block, split):
    """Query blocks [lo, hi) whose band can reach key block `k_block` (or this program's split)."""
    num_blocks = st.num_q // st.block_q
    if st.left is None:
        return _split_range(num_blocks, st.splits, split)
    first_k = k_block * st.block_k
    lo = jnp.maximum(0, lax.div(first_k - st.right, st.block_q))
    hi = jnp.minimum(num_blocks, lax.div(first_k + st.block_k - 1 + st.left, st.block_q) + 1)
    return lo, hi


def _mask(st: _Static, q_index, k_index, q_pos, k_pos, k_valid, banded: bool):
    mask = k_valid > 0
    if banded and st.left is not None:
        delta = k_index[None, :] - q_index[:, None]
        mask = mask & (delta >= -st.left) & (delta <= st.right)
    if st.causal:
        mask = mask & (k_pos <= q_pos)
    return mask


def _softmax_step(st: _Static, q, q_index, q_pos, carry, k, v, k_valid, k_pos, k_index, banded):
    """One key tile of the online softmax: carry (acc, row max, row sum) -> updated carry."""
    acc, m, l = carry
    s = _dot_t(st, q, k) * st.scale
    mask = _mask(st, q_index, k_index, q_pos, k_pos, k_valid, banded)
    s = jnp.where(mask, s, NEG)
    m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
    p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
    correction = jnp.exp(m - m_new)
    l = correction * l + jnp.sum(p, axis=1, keepdims=True)
    acc = correction * acc + _dot(st, p.astype(v.dtype), v)
    return acc, m_new, l


def _dq_step(st: _Static, q, do, lse, delta, q_pos, q_index, dq, k, v, k_valid, k_pos, k_index, banded):
    """One key tile's contribution to dQ."""
    s = _dot_t(st, q, k) * st.scale
    mask = _mask(st, q_index, k_index, q_pos, k_pos, k_valid, banded)
    p = jnp.where(mask, jnp.exp(jnp.where(mask, s, NEG) - lse), 0.0)
    ds = p * (_dot_t(st, do, v) - delta)
    return dq + _dot(st, ds.astype(k.dtype), k) * st.scale


def _dkv_step(st: _Static, k, v, k_valid, k_pos, k_index, carry, q, do, lse, delta, q_pos, q_index):
    """One query tile's contribution to (dK, dV) of a key tile."""
    dk, dv = carry
    s = _dot_t(st, q, k) * st.scale
    mask = _mask(st, q_index, k_index, q_pos, k_pos, k_valid, True)
    p = jnp.where(mask, jnp.exp(jnp.where(mask, s, NEG) - lse), 0.0)
    dv = dv + _dot_tn(st, p.astype(do.dtype), do)
    ds = p * (_dot_t(st, do, v) - delta)
    dk = dk + _dot_tn(st, ds.astype(q.dtype), q) * st.scale
    return dk, dv


# GPU (and interpret mode): each program loops over its tiles inside the kernel; a tile is a dynamic
# slice of the whole key (or query) row of its head and class.


def _forward_kernel(*refs, st: _Static):
    if st.has_global:
        (q_ref, k_ref, v_ref, kval_ref, kpos_ref, qpos_ref, kg_ref, vg_ref, gval_ref, gpos_ref, o_ref, lse_ref) = refs
    else:
        q_ref, k_ref, v_ref, kval_ref, kpos_ref, qpos_ref, o_ref, lse_ref = refs
    q_block, split = pl.program_id(_BLOCK_AXIS), pl.program_id(_SPLIT_AXIS)
    q = q_ref[...]
    q_pos = qpos_ref[...]  # (bq, 1)
    q_index = q_block * st.block_q + lax.broadcasted_iota(jnp.int32, (st.block_q,), 0)
    carry = (
        jnp.zeros(o_ref.shape, jnp.float32),
        jnp.full((st.block_q, 1), NEG, jnp.float32),
        jnp.zeros((st.block_q, 1), jnp.float32),
    )
    if st.has_global:
        args = (kg_ref[...], vg_ref[...], gval_ref[...], gpos_ref[...], None, False)
        carry = _softmax_step(st, q, q_index, q_pos, carry, *args)

    def body(k_block, carry):
        keys = pl.ds(k_block * st.block_k, st.block_k)
        k_index = k_block * st.block_k + lax.broadcasted_iota(jnp.int32, (st.block_k,), 0)
        args = (k_ref[keys, :], v_ref[keys, :], kval_ref[:, keys], kpos_ref[:, keys], k_index, True)
        return _softmax_step(st, q, q_index, q_pos, carry, *args)

    lo, hi = _key_range(st, q_block, split)
    acc, m, l = lax.fori_loop(lo, hi, body, carry)
    seen = l > 0
    o_ref[...] = (acc / jnp.where(seen, l, 1.0)).astype(o_ref.dtype)
    # A row that saw no key has lse = NEG: its backward weights are all masked, and a split that saw
    # none of a row's keys gets weight exp(NEG - lse) = 0 when the splits are combined.
    lse_ref[...] = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), NEG)


def _dq_kernel(*refs, st: _Static):
    n_in = 13 if st.has_global else 9
    q_ref, k_ref, v_ref, kval_ref, kpos_ref, qpos_ref = refs[:6]
    do_ref, lse_ref, delta_ref = refs[n_in - 3 : n_in]
    dq_ref = refs[n_in]
    q_block, split = pl.program_id(_BLOCK_AXIS), pl.program_id(_SPLIT_AXIS)
    rows = (q_ref[...], do_ref[...], lse_ref[...], delta_ref[...], qpos_ref[...])
    q_index = q_block * st.block_q + lax.broadcasted_iota(jnp.int32, (st.block_q,), 0)
    dq = jnp.zeros(dq_ref.shape, jnp.float32)
    if st.has_global:
        kg_ref, vg_ref, gval_ref, gpos_ref = refs[6:10]
        dq = _dq_step(st, *rows, q_index, dq, kg_ref[...], vg_ref[...], gval_ref[...], gpos_ref[...], None, False)

    def body(k_block, dq):
        keys = pl.ds(k_block * st.block_k, st.block_k)
        k_index = k_block * st.block_k + lax.broadcasted_iota(jnp.int32, (st.block_k,), 0)
        args = (k_ref[keys, :], v_ref[keys, :], kval_ref[:, keys], kpos_ref[:, keys], k_index, True)
        return _dq_step(st, *rows, q_index, dq, *args)

    lo, hi = _key_range(st, q_block, split)
    dq_ref[...] = lax.fori_loop(lo, hi, body, dq).astype(dq_ref.dtype)


def _dkv_kernel(
    q_ref, k_ref, v_ref, kval_ref, kpos_ref, qpos_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, st: _Static
):
    k_block, split = pl.program_id(_BLOCK_AXIS), pl.program_id(_SPLIT_AXIS)
    keys = (k_ref[...], v_ref[...], kval_ref[...], kpos_ref[...])
    k_index = k_block * st.block_k + lax.broadcasted_iota(jnp.int32, (st.block_k,), 0)

    def body(q_block, carry):
        tile = pl.ds(q_block * st.block_q, st.block_q)
        rows = (q_ref[tile, :], do_ref[tile, :], lse_ref[tile, :], delta_ref[tile, :], qpos_ref[tile, :])
        q_index = q_block * st.block_q + lax.broadcasted_iota(jnp.int32, (st.block_q,), 0)
        return _dkv_step(st, *keys, k_index, carry, *rows, q_index)

    lo, hi = _query_range(st, k_block, split)
    zeros = jnp.zeros(dk_ref.shape, jnp.float32)
    dk, dv = lax.fori_loop(lo, hi, body, (zeros, jnp.zeros(dv_ref.shape, jnp.float32)))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


# ------------------------------------------------------------------------------------------------
# Where the tiles live. The kernels see (block, width) tiles of one (batch, head, dilation class);
# the index maps below find them in HBM, so the wrappers never transpose the caller's arrays on GPU.


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How (batch, seq, heads, width) arrays are laid out for the kernels.

    `tokens_major` (Triton): the caller's order is kept and only reshaped (free) to
    (batch, seq / dil, dil, heads, width); a tile of dilation class c and head h is then rows
    c, c + dil, c + 2 dil, ... of that head, a strided block that the index map addresses directly.
    Otherwise (Mosaic TPU, whose tiles must span the array's last two dimensions):
    (batch, heads, dil, seq / dil, width), one transpose in and one out.
    Row vectors (log-sum-exp, delta) are (batch, heads, dil, seq / dil, 1) in both.
    """

    tokens_major: bool

    def view(self, x, dil: int, length: int):
        """(b, n, h, w) -> the kernel layout of `length` positions per dilation class (zero-padded)."""
        b, _, h, w = x.shape
        x = _pad_axis(x, 1, length * dil).reshape(b, length, dil, h, w)
        return x if self.tokens_major else jnp.transpose(x, (0, 3, 2, 1, 4))

    def unview(self, x, n: int):
        """The kernel layout -> (b, n, h, w)."""
        if not self.tokens_major:
            x = jnp.transpose(x, (0, 3, 2, 1, 4))
        b, length, dil, h, w = x.shape
        return x.reshape(b, length * dil, h, w)[:, :n]

    def dims(self, x) -> tuple[int, int, int, int, int]:
        """(batch, heads, dil, length, width) of an array in this layout."""
        b, a1, dil, a3, w = x.shape
        return (b, a3, dil, a1, w) if self.tokens_major else (b, a1, dil, a3, w)

    def rows(self, x):
        """Kernel layout -> (b, h, dil, length, w), the row vectors' layout."""
        return jnp.transpose(x, (0, 3, 2, 1, 4)) if self.tokens_major else x

    def from_rows(self, x):
        """(b, h, dil, length, w) -> kernel layout."""
        return jnp.transpose(x, (0, 3, 2, 1, 4)) if self.tokens_major else x

    def tile(self, length: int, width: int, block_of, class_of):
        """BlockSpec of a (length, width) tile: sequence block `block_of(ids)`, class `class_of(ids)`."""
        if self.tokens_major:
            return pl.BlockSpec(
                (None, length, None, None, width), lambda *ids: (ids[0], block_of(ids), class_of(ids), ids[1], 0)
            )
        return pl.BlockSpec(
            (None, None, None, length, width), lambda *ids: (ids[0], ids[1], class_of(ids), block_of(ids), 0)
        )


def _row_tile(length, block_of, class_of):
    """(length, 1) tile of a (b, h, dil, seq, 1) row vector."""
    return pl.BlockSpec((None, None, None, length, 1), lambda *ids: (ids[0], ids[1], class_of(ids), block_of(ids), 0))


def _key_tile(length, block_of, class_of):
    """(1, length) tile of a (b, dil, 1, seq) key flag vector."""
    return pl.BlockSpec((None, None, 1, length), lambda *ids: (ids[0], class_of(ids), 0, block_of(ids)))


def _kpos_tile(length, block_of, class_of):
    """(1, length) tile of a (dil, 1, seq) key position vector."""
    return pl.BlockSpec((None, 1, length), lambda *ids: (class_of(ids), 0, block_of(ids)))


def _qpos_tile(length, block_of, class_of):
    """(length, 1) tile of a (dil, seq, 1) query position vector."""
    return pl.BlockSpec((None, length, 1), lambda *ids: (class_of(ids), block_of(ids), 0))


def _partial_tile(length, width, splits, block_of, streamed):
    """(length, width) tile of a (classes * splits, b, h, seq, width) array of per-program partials.
    Streamed kernels have no splits (their last grid axis steps through tiles into one partial)."""
    return pl.BlockSpec(
        (None, None, None, length, width),
        lambda *ids: (ids[2] * splits + (0 if streamed else ids[_SPLIT_AXIS]), ids[0], ids[1], block_of(ids), 0),
    )


def _block(ids):
    return ids[_BLOCK_AXIS]


def _first(ids):
    return 0


def _class(ids):
    return ids[2]


# ------------------------------------------------------------------------------------------------
# Mosaic TPU: streamed tiles. A TPU core runs its grid in order and holds each block in VMEM, so
# instead of a whole key row per program, the key (or, for dK/dV, query) tiles become the last grid
# axis, marked "arbitrary": step s of query block i gets key tile lo(i) + s, and the running softmax
# (or gradient sums) lives in VMEM scratch from the first step to the last. VMEM then holds a few
# (block, dim) tiles at any sequence length.


def _steps(st: _Static, block: int, other_block: int, num_blocks: int) -> int:
    """Grid steps per program: the most tiles of `block` that one tile of `other_block` can meet."""
    if st.left is None:
        return num_blocks
    return min(num_blocks, (other_block - 1 + st.left + st.right) // block + 2)


def _streamed_key_tile(st: _Static):
    def block_of(ids):
        lo, hi = _key_range(st, ids[_BLOCK_AXIS], 0)
        return jnp.minimum(lo + ids[_SPLIT_AXIS], hi - 1)  # steps past the band re-read the last tile

    return block_of


def _streamed_query_tile(st: _Static):
    def block_of(ids):
        lo, hi = _query_range(st, ids[_BLOCK_AXIS], 0)
        return jnp.minimum(lo + ids[_SPLIT_AXIS], hi - 1)

    return block_of


def _forward_kernel_streamed(*refs, st: _Static, steps: int):
    n_in = 10 if st.has_global else 6
    q_ref, k_ref, v_ref, kval_ref, kpos_ref, qpos_ref = refs[:6]
    o_ref, lse_ref = refs[n_in : n_in + 2]
    acc_ref, m_ref, l_ref = refs[n_in + 2 :]
    q_block, step = pl.program_id(_BLOCK_AXIS), pl.program_id(_SPLIT_AXIS)
    q, q_pos = q_ref[...], qpos_ref[...]
    q_index = q_block * st.block_q + lax.broadcasted_iota(jnp.int32, (st.block_q,), 0)
    lo, hi = _key_range(st, q_block, 0)

    def store(carry):
        acc_ref[...], m_ref[...], l_ref[...] = carry

    @pl.when(step == 0)
    def _start():
        carry = (
            jnp.zeros(acc_ref.shape, jnp.float32),
            jnp.full(m_ref.shape, NEG, jnp.float32),
            jnp.zeros(l_ref.shape, jnp.float32),
        )
        if st.has_global:
            kg_ref, vg_ref, gval_ref, gpos_ref = refs[6:10]
            args = (kg_ref[...], vg_ref[...], gval_ref[...], gpos_ref[...], None, False)
            carry = _softmax_step(st, q, q_index, q_pos, carry, *args)
        store(carry)

    @pl.when(lo + step < hi)
    def _attend():
        k_index = (lo + step) * st.block_k + lax.broadcasted_iota(jnp.int32, (st.block_k,), 0)
        carry = (acc_ref[...], m_ref[...], l_ref[...])
        args = (k_ref[...], v_ref[...], kval_ref[...], kpos_ref[...], k_index, True)
        store(_softmax_step(st, q, q_index, q_pos, carry, *args))

    @pl.when(step == steps - 1)
    def _finish():
        acc, m, l = acc_ref[...], m_ref[...], l_ref[...]
        seen = l > 0
        o_ref[...] = (acc / jnp.where(seen, l, 1.0)).astype(o_ref.dtype)
        lse_ref[...] = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), NEG)


def _dq_kernel_streamed(*refs, st: _Static, steps: int):
    n_in = 13 if st.has_global else 9
    q_ref, k_ref, v_ref, kval_ref, kpos_ref, qpos_ref = refs[:6]
    do_ref, lse_ref, delta_ref = refs[n_in - 3 : n_in]
    dq_ref, acc_ref = refs[n_in], refs[n_in + 1]
    q_block, step = pl.program_id(_BLOCK_AXIS), pl.program_id(_SPLIT_AXIS)
    rows = (q_ref[...], do_ref[...], lse_ref[...], delta_ref[...], qpos_ref[...])
    q_index = q_block * st.block_q + lax.broadcasted_iota(jnp.int32, (st.block_q,), 0)
    lo, hi = _key_range(st, q_block, 0)

    @pl.when(step == 0)
    def _start():
        dq = jnp.zeros(acc_ref.shape, jnp.float32)
        if st.has_global:
            kg_ref, vg_ref, gval_ref, gpos_ref = refs[6:10]
            args = (kg_ref[...], vg_ref[...], gval_ref[...], gpos_ref[...], None, False)
            dq = _dq_step(st, *rows, q_index, dq, *args)
        acc_ref[...] = dq

    @pl.when(lo + step < hi)
    def _attend():
        k_index = (lo + step) * st.block_k + lax.broadcasted_iota(jnp.int32, (st.block_k,), 0)
        args = (k_ref[...], v_ref[...], kval_ref[...], kpos_ref[...], k_index, True)
        acc_ref[...] = _dq_step(st, *rows, q_index, acc_ref[...], *args)

    @pl.when(step == steps - 1)
    def _finish():
        dq_ref[...] = acc_ref[...].astype(dq_ref.dtype)


def _dkv_kernel_streamed(
    q_ref,
    k_ref,
    v_ref,
    kval_ref,
    kpos_ref,
    qpos_ref,
    do_ref,
    lse_ref,
    delta_ref,
    dk_ref,
    dv_ref,
    dk_acc,
    dv_acc,
    *,
    st: _Static,
    steps: int,
):
    k_block, step = pl.program_id(_BLOCK_AXIS), pl.program_id(_SPLIT_AXIS)
    lo, hi = _query_range(st, k_block, 0)
    keys = (k_ref[...], v_ref[...], kval_ref[...], kpos_ref[...])
    k_index = k_block * st.block_k + lax.broadcasted_iota(jnp.int32, (st.block_k,), 0)

    @pl.when(step == 0)
    def _start():
        dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
        dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)

    @pl.when(lo + step < hi)
    def _attend():
        q_index = (lo + step) * st.block_q + lax.broadcasted_iota(jnp.int32, (st.block_q,), 0)
        rows = (q_ref[...], do_ref[...], lse_ref[...], delta_ref[...], qpos_ref[...])
        dk, dv = _dkv_step(st, *keys, k_index, (dk_acc[...], dv_acc[...]), *rows, q_index)
        dk_acc[...], dv_acc[...] = dk, dv

    @pl.when(step == steps - 1)
    def _finish():
        dk_ref[...] = dk_acc[...].astype(dk_ref.dtype)
        dv_ref[...] = dv_acc[...].astype(dv_ref.dtype)


# ------------------------------------------------------------------------------------------------
# pallas_call wrappers, one per kernel for both structures: the loop kernels (GPU, interpret mode)
# read whole rows of the looped side and may split an unbanded loop over programs; the streamed
# kernels (TPU) read one tile of it per grid step along the last, "arbitrary" axis.


def _compiler_params(backend, block, itemsize):
    """Triton's launch parameters for the loop kernels (the streamed ones get Mosaic's, `_call`)."""
    if backend != "triton":
        return None
    from jax.experimental.pallas import triton as plt

    # 128-row tiles hold a 128 x 128 float32 score tile: 8 warps keep it in registers. With float32
    # tiles of 128 rows, two pipeline stages asked an H200 for 257 KiB of shared memory (it has 227 KiB
    # per block): one stage there.
    stages = 1 if block >= 128 and itemsize >= 4 else 2
    return plt.CompilerParams(num_warps=4 if block <= 64 else 8, num_stages=stages)


def _call(kernels, st, grid, in_specs, out_specs, out_shape, args, scratch=()):
    """`kernels` = (loop kernel, streamed kernel); `scratch`: the streamed kernel's VMEM sums."""
    if st.streamed:
        from jax.experimental.pallas import tpu as pltpu

        kernel = functools.partial(kernels[1], st=st, steps=grid[-1])
        extra = dict(
            scratch_shapes=[pltpu.VMEM(shape, jnp.float32) for shape in scratch],
            compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",) * 4 + ("arbitrary",)),
        )
    else:
        itemsize = max(jnp.dtype(x.dtype).itemsize for x in args[:3])
        kernel = functools.partial(kernels[0], st=st)
        extra = dict(compiler_params=_compiler_params(st.backend, max(st.block_q, st.block_k), itemsize))
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape, interpret=st.interpret, **extra
    )(*args)


def _looped_keys(st: _Static):
    """(tile length, tile index, last grid axis) of the keys a query tile loops over."""
    if st.streamed:
        return st.block_k, _streamed_key_tile(st), _steps(st, st.block_k, st.block_q, st.num_k // st.block_k)
    return st.num_k, _first, st.splits


def _looped_queries(st: _Static):
    """(tile length, tile index, last grid axis) of the queries a key tile loops over (dK/dV)."""
    if st.streamed:
        return st.block_q, _streamed_query_tile(st), _steps(st, st.block_q, st.block_k, st.num_q // st.block_q)
    return st.num_q, _first, st.splits


def _query_side_specs(st: _Static, layout: _Layout, q, v, glob):
    """in_specs of q (blocked), the keys the program loops over (its head and class), their vectors,
    the query positions and (with global keys) the global key tiles, as the forward and dQ read them."""
    d, dv = q.shape[-1], v.shape[-1]
    key_len, key_at, _ = _looped_keys(st)
    specs = [
        layout.tile(st.block_q, d, _block, _class),
        layout.tile(key_len, d, key_at, _class),
        layout.tile(key_len, dv, key_at, _class),
        _key_tile(key_len, key_at, _class),
        _kpos_tile(key_len, key_at, _class),
        _qpos_tile(st.block_q, _block, _class),
    ]
    if st.has_global:
        g_pad = layout.dims(glob[0])[3]
        specs += [
            layout.tile(g_pad, d, _first, _first),
            layout.tile(g_pad, dv, _first, _first),
            _key_tile(g_pad, _first, _first),
            _kpos_tile(g_pad, _first, _first),
        ]
    return specs


def _combine(lse_parts, out_parts):
    """Online-softmax partials over key splits -> (lse (b, h, 1, g, 1), out (b, h, g, dv))."""
    top = jnp.max(lse_parts, axis=0)
    weights = jnp.exp(lse_parts - top)  # (S, b, h, 1, g, 1); a split that saw no key weighs 0
    total = jnp.sum(weights, axis=0)
    lse = top + jnp.log(total)
    out = jnp.sum(weights[:, :, :, 0] * out_parts, axis=0) / total[:, :, 0]
    return lse, out


_FORWARD = (_forward_kernel, _forward_kernel_streamed)
_DQ = (_dq_kernel, _dq_kernel_streamed)
_DKV = (_dkv_kernel, _dkv_kernel_streamed)


def _forward_call(st: _Static, layout: _Layout, q, k, v, aux, glob):
    """(out, lse) in the kernel layout; with splits > 1 (no band, no global keys) each program attends
    its share of the key blocks and XLA combines the partial softmaxes."""
    b, h, dil, length, _ = layout.dims(q)
    dv = v.shape[-1]
    in_specs = _query_side_specs(st, layout, q, v, glob)
    args = [q, k, v, *aux] + (list(glob) if st.has_global else [])
    grid = (b, h, dil, length // st.block_q, _looped_keys(st)[2])
    if st.splits == 1:
        out_specs = [layout.tile(st.block_q, dv, _block, _class), _row_tile(st.block_q, _block, _class)]
        out_shape = [
            jax.ShapeDtypeStruct(q.shape[:-1] + (dv,), q.dtype),
            jax.ShapeDtypeStruct((b, h, dil, length, 1), jnp.float32),
        ]
        scratch = [(st.block_q, dv), (st.block_q, 1), (st.block_q, 1)]
        return _call(_FORWARD, st, grid, in_specs, out_specs, out_shape, args, scratch)
    assert dil == 1 and not st.has_global and not st.streamed
    out_specs = [
        _partial_tile(st.block_q, dv, st.splits, _block, st.streamed),
        _partial_tile(st.block_q, 1, st.splits, _block, st.streamed),
    ]
    out_shape = [
        jax.ShapeDtypeStruct((st.splits, b, h, length, dv), jnp.float32),
        jax.ShapeDtypeStruct((st.splits, b, h, length, 1), jnp.float32),
    ]
    out_parts, lse_parts = _call(_FORWARD, st, grid, in_specs, out_specs, out_shape, args)
    lse, out = _combine(lse_parts[:, :, :, None], out_parts)
    return layout.from_rows(out[:, :, None].astype(q.dtype)), lse


def _dq_call(st, layout, q, k, v, aux, glob, do, lse, delta):
    b, h, dil, length, d = layout.dims(q)
    in_specs = _query_side_specs(st, layout, q, v, glob)
    in_specs += [
        layout.tile(st.block_q, do.shape[-1], _block, _class),
        _row_tile(st.block_q, _block, _class),
        _row_tile(st.block_q, _block, _class),
    ]
    args = [q, k, v, *aux] + (list(glob) if st.has_global else []) + [do, lse, delta]
    grid = (b, h, dil, length // st.block_q, _looped_keys(st)[2])
    if st.splits == 1:
        out_spec, out_shape = layout.tile(st.block_q, d, _block, _class), jax.ShapeDtypeStruct(q.shape, q.dtype)
        return _call(_DQ, st, grid, in_specs, out_spec, out_shape, args, [(st.block_q, d)])
    out_spec = _partial_tile(st.block_q, d, st.splits, _block, st.streamed)
    parts_shape = jax.ShapeDtypeStruct((dil * st.splits, b, h, length, d), jnp.float32)
    parts = _call(_DQ, st, grid, in_specs, out_spec, parts_shape, args)
    dq = jnp.sum(parts.reshape(dil, st.splits, b, h, length, d), axis=1)  # (dil, b, h, length, d)
    return layout.from_rows(jnp.transpose(dq, (1, 2, 0, 3, 4)).astype(q.dtype))


def _dkv_call(st, layout, q, k, v, kval, kpos, qpos, do, lse, delta, *, shared_keys: bool):
    """dK, dV for one key set against all queries of the program's head and class.

    `shared_keys`: the keys (global keys, stored once with dil = 1) are seen by every dilation class;
    each (class, split) program then writes its own partial, and XLA sums them.
    """
    b, h, dil, _, _ = layout.dims(q)
    d, dv = k.shape[-1], v.shape[-1]
    key_class = _first if shared_keys else _class
    q_len, q_at, last = _looped_queries(st)
    in_specs = [
        layout.tile(q_len, d, q_at, _class),
        layout.tile(st.block_k, d, _block, key_class),
        layout.tile(st.block_k, dv, _block, key_class),
        _key_tile(st.block_k, _block, key_class),
        _kpos_tile(st.block_k, _block, key_class),
        _qpos_tile(q_len, q_at, _class),
        layout.tile(q_len, do.shape[-1], q_at, _class),
        _row_tile(q_len, q_at, _class),
        _row_tile(q_len, q_at, _class),
    ]
    args = (q, k, v, kval, kpos, qpos, do, lse, delta)
    grid = (b, h, dil, st.num_k // st.block_k, last)
    scratch = [(st.block_k, d), (st.block_k, dv)]
    if not shared_keys:
        assert st.splits == 1
        out_specs = [layout.tile(st.block_k, d, _block, _class), layout.tile(st.block_k, dv, _block, _class)]
        out_shape = [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)]
        return _call(_DKV, st, grid, in_specs, out_specs, out_shape, args, scratch)
    parts = dil * st.splits
    out_specs = [
        _partial_tile(st.block_k, d, st.splits, _block, st.streamed),
        _partial_tile(st.block_k, dv, st.splits, _block, st.streamed),
    ]
    out_shape = [
        jax.ShapeDtypeStruct((parts, b, h, st.num_k, d), jnp.float32),
        jax.ShapeDtypeStruct((parts, b, h, st.num_k, dv), jnp.float32),
    ]
    dk, dv_ = _call(_DKV, st, grid, in_specs, out_specs, out_shape, args, scratch)
    return tuple(layout.from_rows(jnp.sum(x, axis=0)[:, :, None].astype(y.dtype)) for x, y in ((dk, k), (dv_, v)))


def _zero_cotangent(x):
    if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        return np.zeros(x.shape, jax.dtypes.float0)
    return jnp.zeros_like(x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _flash(st: _Static, layout: _Layout, q, k, v, aux, glob):
    return _forward_call(st, layout, q, k, v, aux, glob)[0]


def _flash_fwd(st, layout, q, k, v, aux, glob):
    out, lse = _forward_call(st, layout, q, k, v, aux, glob)
    return out, (q, k, v, aux, glob, out, lse)


def _flash_bwd(st, layout, residuals, d_out):
    q, k, v, aux, glob, out, lse = residuals
    kval, kpos, qpos = aux
    delta = layout.rows(jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True))
    dq = _dq_call(st, layout, q, k, v, aux, glob, d_out, lse, delta)
    st_k = dataclasses.replace(st, splits=1)  # dK/dV of the sequence's keys: one program per key block
    dk, dv = _dkv_call(st_k, layout, q, k, v, kval, kpos, qpos, d_out, lse, delta, shared_keys=False)
    d_glob = jax.tree.map(_zero_cotangent, glob)
    if st.has_global:
        kg, vg, gval, gpos = glob
        g_pad = layout.dims(kg)[3]
        splits = 1 if st.streamed else _num_splits(st.num_q // st.block_q)
        st_g = dataclasses.replace(st, left=None, right=None, block_k=g_pad, num_k=g_pad, splits=splits)
        dkg, dvg = _dkv_call(st_g, layout, q, kg, vg, gval, gpos, qpos, d_out, lse, delta, shared_keys=True)
        d_glob = (dkg, dvg) + tuple(_zero_cotangent(x) for x in glob[2:])
    return dq, dk, dv, jax.tree.map(_zero_cotangent, aux), d_glob


_flash.defvjp(_flash_fwd, _flash_bwd)


def _num_splits(num_blocks: int) -> int:
    return max(1, min(_MAX_SPLITS, num_blocks // _BLOCKS_PER_SPLIT))


# ------------------------------------------------------------------------------------------------
# The public wrapper: dilation classes, global rows and columns, padding.


def _per_head(dilation, heads) -> tuple[int, ...]:
    if isinstance(dilation, (tuple, list)):
        return tuple(dilation) * heads if len(dilation) == 1 else tuple(dilation)
    return (int(dilation),) * heads


def _next_pow2(x: int, at_least: int = 16) -> int:
    return max(at_least, 1 << (max(1, x) - 1).bit_length())


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pad_axis(x, axis, size, value=0):
    if x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad, constant_values=value)


_FAR = np.iinfo(np.int32).max // 2  # position of padding keys: after every query (hidden by causal)


def _local_part(q, k, v, key_mask, *, window, dilation, global_tokens, causal, scale, block, common):
    """Windowed + global-column attention for heads of one dilation; q, k, v (b, n, h, d) -> (b, n, h, d)."""
    b, n, h, d = q.shape
    layout = common["layout"]
    cls_len = -(-n // dilation)
    n_cls = _round_up(cls_len, block)
    left, right = (min(w, cls_len) for w in window)

    position = np.arange(n_cls)[None, :] * dilation + np.arange(dilation)[:, None]  # (dil, n_cls)
    is_global = np.zeros(n, bool)
    is_global[list(global_tokens)] = True
    local_key = (position < n) & ~is_global[np.minimum(position, n - 1)]
    valid = jnp.broadcast_to(jnp.asarray(local_key), (b, dilation, n_cls))
    if key_mask is not None:
        km = _pad_axis(key_mask, 1, n_cls * dilation, False).reshape(b, n_cls, dilation)
        valid = valid & jnp.transpose(km, (0, 2, 1))
    kval = valid.astype(jnp.float32)[:, :, None, :]  # (b, dil, 1, n_cls)
    pos = np.where(position < n, position, _FAR).astype(np.int32)
    aux = (kval, jnp.asarray(pos[:, None, :]), jnp.asarray(pos[:, :, None]))

    glob = None
    if len(global_tokens):
        g = len(global_tokens)
        g_pad = _next_pow2(g, 16)
        idx = np.asarray(global_tokens)
        gval = jnp.ones((b, g), bool) if key_mask is None else key_mask[:, idx]
        gval = _pad_axis(gval.astype(jnp.float32), 1, g_pad)[:, None, None, :]  # (b, 1, 1, g_pad)
        gpos = np.full((1, 1, g_pad), _FAR, np.int32)
        gpos[0, 0, :g] = idx
        glob = (layout.view(k[:, idx], 1, g_pad), layout.view(v[:, idx], 1, g_pad), gval, jnp.asarray(gpos))

    st = _Static(
        scale=scale,
        left=left,
        right=right,
        causal=causal,
        block_q=block,
        block_k=block,
        num_q=n_cls,
        num_k=n_cls,
        has_global=glob is not None,
        interpret=common["interpret"],
        backend=common["backend"],
        precision=common["precision"],
        streamed=common["backend"] == "mosaic_tpu",
    )
    views = (layout.view(x, dilation, n_cls) for x in (q, k, v))
    return layout.unview(_flash(st, layout, *views, aux, glob), n)


def _global_part(q_rows, k, v, key_mask, *, global_tokens, causal, scale, block, common):
    """Rows of the global queries against every key; q_rows (b, g, h, d) -> (b, g, h, d).

    The key loop is split across up to `_MAX_SPLITS` programs per (batch, head): a few global rows
    against a long sequence would otherwise leave the device with batch x heads programs, each
    walking every key block in turn.
    """
    b, n, h, d = k.shape
    layout = common["layout"]
    g = q_rows.shape[1]
    g_pad = _round_up(g, block)
    n_pad = _round_up(n, block)
    valid = jnp.ones((b, n), bool) if key_mask is None else key_mask
    kval = _pad_axis(valid.astype(jnp.float32), 1, n_pad)[:, None, None, :]  # (b, 1, 1, n_pad)
    kpos = jnp.asarray(np.arange(n_pad, dtype=np.int32)[None, None, :])
    qpos = np.full((1, g_pad, 1), _FAR, np.int32)
    qpos[0, :g, 0] = global_tokens
    st = _Static(
        scale=scale,
        left=None,
        right=None,
        causal=causal,
        block_q=block,
        block_k=block,
        num_q=g_pad,
        num_k=n_pad,
        has_global=False,
        interpret=common["interpret"],
        backend=common["backend"],
        precision=common["precision"],
        splits=1 if common["backend"] == "mosaic_tpu" else _num_splits(n_pad // block),
        streamed=common["backend"] == "mosaic_tpu",
    )
    views = (layout.view(q_rows, 1, g_pad), layout.view(k, 1, n_pad), layout.view(v, 1, n_pad))
    out = _flash(st, layout, *views, (kval, kpos, jnp.asarray(qpos)), None)
    return layout.unview(out, g)


def propagate_nonfinite_values(call, q, k, v, global_qkv=None, global_tokens=()):
    """`call(q, k, v, global_qkv)` with one NaN/inf semantics for every attention implementation.

    An output row is NaN exactly when its query, or the key or value row of any key it attends to,
    holds a NaN or inf; every other row is unaffected. Left alone, implementations differ: a masked
    value row still meets a zero weight in blocked `weights @ values` products (0 * NaN = NaN), and
    which rows share a block differs between the dense, banded and Pallas paths; an inf key gives a
    -inf score that an online softmax reads as "masked". So queries, keys and values are made
    finite before the call, and the rows that attend a non-finite key or value row are found with
    one more call on zero queries and keys (uniform weights over exactly the attended keys) and the
    bad-row indicator as values. That call runs only when some input is not finite. With
    `global_qkv`, the global tokens' rows (`global_tokens`) use q_global, k_global and v_global.
    """

    def split(x):
        bad = ~jnp.all(jnp.isfinite(x), axis=-1, keepdims=True)  # (batch, rows, heads, 1)
        return jnp.where(bad, jnp.zeros((), x.dtype), x), bad

    (q_c, bad_q), (k_c, bad_k), (v_c, bad_v) = split(q), split(k), split(v)
    bad_any = jnp.any(bad_q) | jnp.any(bad_k) | jnp.any(bad_v)
    clean_global = None
    if global_qkv is not None:
        (qg_c, bad_qg), (kg_c, bad_kg), (vg_c, bad_vg) = (split(x) for x in global_qkv)
        clean_global = (qg_c, kg_c, vg_c)
        bad_any = bad_any | jnp.any(bad_qg) | jnp.any(bad_kg) | jnp.any(bad_vg)
    out = call(q_c, k_c, v_c, clean_global)

    def hit_rows():
        indicator = (bad_k | bad_v).astype(q.dtype)
        zeros_global = None
        if global_qkv is not None:
            zeros_global = (jnp.zeros_like(qg_c), jnp.zeros_like(kg_c), (bad_kg | bad_vg).astype(q.dtype))
        hits = call(jnp.zeros_like(q_c), jnp.zeros_like(k_c), indicator, zeros_global)[..., :1] > 0
        own = bad_q
        if global_qkv is not None and len(global_tokens):
            rows = np.asarray(global_tokens)
            own_g = bad_qg[:, rows] if bad_qg.shape[1] == q.shape[1] else bad_qg
            own = own.at[:, rows].set(own_g)  # global rows read q_global, not q
        return hits | own

    hit = lax.cond(bad_any, hit_rows, lambda: jnp.zeros(out.shape[:-1] + (1,), bool))
    return jnp.where(hit, jnp.asarray(jnp.nan, out.dtype), out)


def _check_arguments(q, k, v, window, dilation, global_tokens, key_mask, scale) -> None:
    """The same argument contract as `frugal.transforms.attention.hybrid_attention`, one clear error each."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"{name} must be shaped (batch, seq, heads, head_dim), got {getattr(x, 'shape', None)}")
    if not q.shape[:3] == k.shape[:3] == v.shape[:3]:
        raise ValueError(f"q, k, v must agree on (batch, seq, heads); got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"mismatched head dims: q has head_dim {q.shape[-1]} but k has {k.shape[-1]}")
    b, n, h, _ = q.shape
    if n < 1:
        raise ValueError("the sequence is empty (seq = 0); attention needs at least one token")
    if (
        not isinstance(window, (tuple, list))
        or len(window) != 2
        or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w >= 0 for w in window)
    ):
        raise ValueError(f"window must be (left, right) with ints >= 0, got {window!r}")
    dilations = (dilation,) if isinstance(dilation, (int, np.integer)) else tuple(dilation)
    if len(dilations) not in (1, h) or not all(isinstance(x, (int, np.integer)) and x >= 1 for x in dilations):
        raise ValueError(f"dilation must be an int >= 1 or one such int per head ({h}), got {dilation!r}")
    tokens = tuple(global_tokens)
    if not all(isinstance(t, (int, np.integer)) and 0 <= t < n for t in tokens) or len(set(tokens)) != len(tokens):
        raise ValueError(f"global_tokens must be distinct ints in [0, {n}) (seq = {n}), got {tokens!r}")
    if key_mask is not None and getattr(key_mask, "shape", None) != (b, n):
        raise ValueError(f"key_mask must be shaped (batch, seq)={(b, n)}, got {getattr(key_mask, 'shape', None)}")
    if scale is not None and not isinstance(scale, jax.core.Tracer) and not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")


PRECISIONS = (None, "default", "highest", "bfloat16")


def hybrid_attention_pallas(
    q,
    k,
    v,
    *,
    window: tuple[int, int],
    dilation=1,
    global_tokens: Sequence[int] = (),
    causal: bool = False,
    key_mask=None,
    global_qkv=None,
    scale: float | None = None,
    block_size: int | None = None,
    precision: str | None = None,
    interpret: bool | None = None,
    backend: str | None = None,
    check_finite: bool = True,
):
    """1-D hybrid attention through the Pallas kernel; q, k, v (batch, seq, heads, head_dim).

    Args:
      window: (left, right) inclusive extents in (dilated) steps.
      dilation: int or one int per head.
      global_tokens: sorted distinct sequence indices of the global tokens (symmetric global attention).
      causal: hide keys after the query.
      key_mask: optional (batch, seq) bool, True for real tokens.
      global_qkv: optional (q_global, k_global, v_global): the global rows use these projections.
        q_global holds every row or only the global rows.
      scale: score scale (default 1/sqrt(head_dim)).
      block_size: query/key block (power of two, >= 16; default 64, or 16 when interpreting).
      precision: the kernel's products for float32 inputs (always accumulated in float32). None
        follows `jax.default_matmul_precision`, like XLA's products: on GPU the default is TF32
        operands (Triton's tf32 dot, about 1e-3 relative error), "highest" gives IEEE float32;
        "default" is the backend's default whatever the context; "bfloat16" feeds the products bf16
        operands (faster, about 1e-2). bf16 inputs always use bf16 operands.
      interpret: run the kernel in the Pallas interpreter (default: on CPU).
      backend: "triton" (GPU) or "mosaic_tpu" (TPU): the kernel structure and compiler parameters
        (None: the platform's, when not interpreting; interpret mode may take either to run that
        structure on CPU).
      check_finite: apply `propagate_nonfinite_values` (the NaN/inf contract). Pass False only when the
        caller applies it already (as `frugal.transforms.attention.hybrid_attention` does), which
        saves the finiteness scan over q, k and v.
    """
    _check_arguments(q, k, v, window, dilation, global_tokens, key_mask, scale)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {PRECISIONS}")

    def call(q, k, v, global_qkv):
        return _hybrid_attention_pallas(
            q,
            k,
            v,
            window=window,
            dilation=dilation,
            global_tokens=global_tokens,
            causal=causal,
            key_mask=key_mask,
            global_qkv=global_qkv,
            scale=scale,
            block_size=block_size,
            precision=precision,
            interpret=interpret,
            backend=backend,
        )

    if not check_finite:
        return call(q, k, v, global_qkv)
    return propagate_nonfinite_values(call, q, k, v, global_qkv, global_tokens)


def _hybrid_attention_pallas(
    q,
    k,
    v,
    *,
    window,
    dilation,
    global_tokens,
    causal,
    key_mask,
    global_qkv,
    scale,
    block_size,
    precision,
    interpret,
    backend,
):
    b, n, h, d = q.shape
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    if backend is None and not interpret:
        backend = {"gpu": "triton", "tpu": "mosaic_tpu"}.get(jax.default_backend())
    if backend not in (None, "triton", "mosaic_tpu"):
        raise ValueError(f"backend={backend!r}: use 'triton' (GPU), 'mosaic_tpu' (TPU) or None")
    block = block_size or (16 if interpret else 64)
    if block < 16 or block & (block - 1):
        raise ValueError(f"block_size={block} must be a power of two >= 16")
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    global_tokens = tuple(int(t) for t in global_tokens)
    # Triton needs power-of-two tiles: zero-pad the head dims (zeros change neither scores nor outputs).
    d_pad, dv = _next_pow2(d), v.shape[-1]
    dv_pad = _next_pow2(dv)
    q_p, k_p, v_p = _pad_axis(q, 3, d_pad), _pad_axis(k, 3, d_pad), _pad_axis(v, 3, dv_pad)
    key_mask = None if key_mask is None else jnp.asarray(key_mask).astype(bool)
    common = dict(
        layout=_Layout(tokens_major=backend != "mosaic_tpu"),
        interpret=interpret,
        backend=backend,
        precision=precision,
    )

    dilations = _per_head(dilation, h)
    local = dict(window=window, global_tokens=global_tokens, causal=causal, scale=scale, block=block, common=common)
    if len(set(dilations)) == 1:
        out = _local_part(q_p, k_p, v_p, key_mask, dilation=dilations[0], **local)
    else:  # one call per dilation, on the heads that use it
        outs = [None] * h
        for dil in sorted(set(dilations)):
            heads = np.asarray([i for i in range(h) if dilations[i] == dil])
            part = _local_part(q_p[:, :, heads], k_p[:, :, heads], v_p[:, :, heads], key_mask, dilation=dil, **local)
            for j, head in enumerate(heads):
                outs[head] = part[:, :, j]
        out = jnp.stack(outs, axis=2)
    if global_tokens:
        idx = np.asarray(global_tokens)
        if global_qkv is not None:
            q_g, k_g, v_g = global_qkv
            q_rows = q_g[:, idx] if q_g.shape[1] == n else q_g
        else:
            q_rows, k_g, v_g = q[:, idx], k, v
        rows_out = _global_part(
            _pad_axis(q_rows, 3, d_pad),
            _pad_axis(k_g, 3, d_pad),
            _pad_axis(v_g, 3, dv_pad),
            key_mask,
            global_tokens=global_tokens,
            causal=causal,
            scale=scale,
            block=block,
            common=common,
        )
        out = out.at[:, idx].set(rows_out)
    return out[..., :dv]


__all__ = ["hybrid_attention_pallas", "hybrid_attention_reference", "propagate_nonfinite_values", "reference_mask"]
