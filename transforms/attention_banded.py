"""The banded XLA path of `hybrid_attention`: O(n * (w + g)) time and memory.

How it works (all index bookkeeping is numpy at trace time, so the program holds only slices or gathers
and batched matmuls):

1. Dilation by re-ordering: tokens are split into classes by their residue modulo the dilation
   (per axis in 2-D). Inside a class a dilated window is an ordinary contiguous window.
2. Each class's (sub-)grid is cut into query tiles; a tile of th x tw queries needs exactly the
   (th + up + down) x (tw + left + right) slab of keys around it. The overhead over the exact band
   is slab / window per query (about 1.1-1.8x by default). A `lax.map` loop walks over the tiles
   (128 queries per step): each step fetches its queries and key slab (dynamic slices when the tiles
   are contiguous runs of the sequence, 1-D without dilation; gathers otherwise), and its scores,
   softmax and value product stay a few MiB, in cache. Vectorizing over all tiles at once streams
   several n x slab tensors through memory instead and measured 2-3x slower on this CPU.
3. Global keys form a separate (n, g) score block, global query rows a separate (g, n) block; the
   softmax runs jointly over [slab keys, global keys]. Global tokens are removed from the slabs so
   that they are counted once.

Per-head dilation runs each group of heads with the same dilation separately.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from frugal.transforms.attention import MASKED_SCORE, AttentionPattern, global_rows, masked_softmax_weights

DEFAULT_BLOCK_1D = 128
DEFAULT_TILE_2D = (4, 8)
# Queries per loop step of the banded path: enough for efficient matmuls, small enough for cache.
QUERIES_PER_STEP = 128


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """Static gather plan for one dilation value (numpy arrays; `fill` marks padding)."""

    query_index: np.ndarray  # (tiles, T) sequence positions of each tile's queries
    key_index: np.ndarray  # (tiles, S) sequence positions of each tile's key slab
    window_ok: np.ndarray  # (T, S) whether slab key s lies in the window of tile query t
    inverse: np.ndarray  # (seq,) flat slot (tile * T + t) of every sequence position's query
    fill: int
    # Set when tile i holds queries i*T + t and keys i*T - key_offset + s (1-D, dilation 1), so a
    # step can slice instead of gather; None otherwise.
    key_offset: int | None = None


def _axis_tiles(size: int, dilation: int, before: int, after: int, tile: int):
    """1-D building block: for each residue class, tiles of queries and their key slabs.

    Returns a list of (query_coords (tiles, tile), key_coords (tiles, tile+before+after),
    query_rel (tile,), key_rel (tile+before+after,)) per class, coordinates in the original axis with
    -1 for padding, and the in-class relative offsets used for the window test.
    """
    classes = []
    for residue in range(min(dilation, size)):
        count = (size - 1 - residue) // dilation + 1
        num_tiles = -(-count // tile)
        start = np.arange(num_tiles)[:, None] * tile
        q_sub = start + np.arange(tile)[None, :]
        k_sub = start - before + np.arange(tile + before + after)[None, :]

        def to_coord(sub):
            coord = residue + dilation * sub
            return np.where((sub >= 0) & (sub < count), coord, -1)

        classes.append((to_coord(q_sub), to_coord(k_sub)))
    q_rel = np.arange(tile)
    k_rel = np.arange(tile + before + after) - before
    return classes, q_rel, k_rel


@functools.lru_cache(maxsize=64)
def make_tile_plan(pattern: AttentionPattern, seq_len: int, dilation: int, block_size: int | None) -> TilePlan:
    """Builds the gather plan of `pattern` (with the given dilation) for `seq_len` tokens."""
    left, right = pattern.window
    positions = pattern.local_positions(seq_len)
    if pattern.grid is None:
        height, width = 1, seq_len
        dil_rows, dil_cols = 1, dilation
        up = down = 0
        per_class = -(-width // dilation)
        # Tiles about as long as the window keep the slab overhead (T + w) / w near 1.25-2 while the
        # per-tile matmuls stay big enough for the CPU.
        block = block_size or min(DEFAULT_BLOCK_1D, max(16, left + right))
        tile_rows, tile_cols = 1, max(1, min(block, per_class))
    else:
        height, width = pattern.grid
        dil_rows = dil_cols = dilation
        up, down = left, right
        tile_rows, tile_cols = DEFAULT_TILE_2D if block_size is None else (block_size, block_size)
        tile_rows = max(1, min(tile_rows, -(-height // dilation)))
        tile_cols = max(1, min(tile_cols, -(-width // dilation)))
    # A window wider than a class never needs more keys than the class holds.
    up = min(up, -(-height // dil_rows) - 1)
    down = min(down, -(-height // dil_rows) - 1)
    left = min(left, -(-width // dil_cols) - 1)
    right = min(right, -(-width // dil_cols) - 1)

    row_classes, q_rel_r, k_rel_r = _axis_tiles(height, dil_rows, up, down, tile_rows)
    col_classes, q_rel_c, k_rel_c = _axis_tiles(width, dil_cols, left, right, tile_cols)

    fill = seq_len
    is_global = np.zeros(seq_len + 1, bool)
    is_global[list(pattern.global_tokens)] = True
    query_tiles, key_tiles = [], []
    for q_rows, k_rows in row_classes:
        for q_cols, k_cols in col_classes:
            # tiles = (row tiles) x (col tiles); each tile's members in raster order
            def grid_positions(rows, cols):
                r = rows[:, None, :, None]
                c = cols[None, :, None, :]
                valid = (r >= 0) & (c >= 0)
                flat = np.where(valid, r * width + c, 0)
                pos = np.where(valid, positions[flat], fill)
                return pos.reshape(rows.shape[0] * cols.shape[0], rows.shape[1] * cols.shape[1])

            query_tiles.append(grid_positions(q_rows, q_cols))
            key_tiles.append(grid_positions(k_rows, k_cols))
    query_index = np.concatenate(query_tiles).astype(np.int32)
    key_index = np.concatenate(key_tiles).astype(np.int32)
    if pattern.grid is None:
        # global keys are handled by the separate global block; keep them out of the slabs
        key_index = np.where(is_global[key_index], fill, key_index).astype(np.int32)

    dr = k_rel_r[None, :, None] - q_rel_r[:, None, None]  # (Tr, Sr, 1)
    dc = k_rel_c[None, :] - q_rel_c[:, None]  # (Tc, Sc)
    ok_r = (dr >= -up) & (dr <= down)
    ok_c = (dc >= -left) & (dc <= right)
    window_ok = ok_r[:, None, :, :] & ok_c[None, :, None, :]  # (Tr, Tc, Sr, Sc)
    window_ok = window_ok.reshape(len(q_rel_r) * len(q_rel_c), len(k_rel_r) * len(k_rel_c))

    inverse = np.zeros(seq_len, np.int32)
    flat = query_index.reshape(-1)
    real = flat != fill
    inverse[flat[real]] = np.flatnonzero(real)
    key_offset = left if pattern.grid is None and dilation == 1 else None
    return TilePlan(query_index, key_index, window_ok, inverse, fill, key_offset)


def _pad_one(x, axis=1, value=0):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, 1)
    return jnp.pad(x, pad, constant_values=value)


def _tile_steps(plan: TilePlan, group: int):
    """Query (steps, group, T) and key (steps, group, S) indices, padded with whole tiles of `fill`."""
    tiles = plan.query_index.shape[0]
    steps = -(-tiles // group)

    def pad(index):
        out = np.full((steps * group, index.shape[1]), plan.fill, np.int32)
        out[:tiles] = index
        return out.reshape(steps, group, index.shape[1])

    return steps, pad(plan.query_index), pad(plan.key_index)


def _banded_group(q, k, v, pattern, plan: TilePlan, key_mask, scale):
    """Local + global-key attention for every query of one head group, q/k/v as (b, h, n, d).

    A loop (`lax.map`) over groups of query tiles: each step's scores, weights and slabs are a few MiB
    and stay in cache, where one vectorized pass over all tiles streams several score-sized tensors
    (n * S floats each) through memory and is 2-3x slower on CPU. When the tiles are contiguous runs
    of the sequence (1-D, dilation 1) the step reads its queries and key slab with dynamic slices;
    otherwise it gathers them through the plan's indices.
    """
    batch, heads, seq_len, dim = q.shape
    tile, slab = plan.query_index.shape[1], plan.key_index.shape[1]
    group = max(1, QUERIES_PER_STEP // tile)
    steps, q_index, k_index = _tile_steps(plan, group)
    window_ok = jnp.asarray(plan.window_ok)
    rows = np.asarray(pattern.global_tokens)
    if pattern.global_tokens:
        k_g, v_g = k[:, :, rows], v[:, :, rows]  # (b, h, g, d)
    key_mask_pad = None if key_mask is None else _pad_one(key_mask, 1, False)

    if plan.key_offset is not None:
        # Contiguous tiles: step s holds queries [s*G*T, (s+1)*G*T) and tile j of it the keys
        # [start - key_offset, start - key_offset + S); the padding is masked through k_index.
        span = steps * group * tile
        q_src = jnp.pad(q, ((0, 0), (0, 0), (0, span - seq_len), (0, 0)))
        back = span - tile + slab - plan.key_offset - seq_len
        pad_keys = ((0, 0), (0, 0), (plan.key_offset, back), (0, 0))
        k_src, v_src = jnp.pad(k, pad_keys), jnp.pad(v, pad_keys)

        def fetch(step, q_idx, k_idx):
            start = step * (group * tile)
            q_b = jax.lax.dynamic_slice_in_dim(q_src, start, group * tile, 2)
            q_b = q_b.reshape(batch, heads, group, tile, dim)
            k_b = jnp.stack(
                [jax.lax.dynamic_slice_in_dim(k_src, start + j * tile, slab, 2) for j in range(group)], axis=2
            )
            v_b = jnp.stack(
                [jax.lax.dynamic_slice_in_dim(v_src, start + j * tile, slab, 2) for j in range(group)], axis=2
            )
            return q_b, k_b, v_b
    else:
        q_src, k_src, v_src = _pad_one(q, 2), _pad_one(k, 2), _pad_one(v, 2)

        def fetch(step, q_idx, k_idx):
            return q_src[:, :, q_idx], k_src[:, :, k_idx], v_src[:, :, k_idx]

    def step_fn(xs):
        step, q_idx, k_idx = xs  # q_idx (G, T), k_idx (G, S)
        q_b, k_b, v_b = fetch(step, q_idx, k_idx)
        scores = jnp.einsum("bhgqd,bhgsd->bhgqs", q_b, k_b) * scale
        mask = window_ok[None, None, None] & (k_idx != plan.fill)[None, None, :, None, :]
        if pattern.causal:
            mask = mask & (k_idx[:, None, :] <= q_idx[:, :, None])[None, None]
        if key_mask_pad is not None:
            mask = mask & key_mask_pad[:, k_idx][:, None, :, None, :]
        # One softmax over [slab keys, global keys] without concatenating them. A masked score is
        # MASKED_SCORE, whose exp underflows to exactly 0 whenever the row has a real score; rows
        # with no allowed key at all are zeroed at the end.
        scores = jnp.where(mask, scores, MASKED_SCORE)
        top = jnp.max(scores, axis=-1, keepdims=True)
        if pattern.global_tokens:
            scores_g = jnp.einsum("bhgqd,bhkd->bhgqk", q_b, k_g) * scale
            mask_g = jnp.ones(scores_g.shape[2:], bool)[None, None]
            if pattern.causal:
                mask_g = mask_g & (jnp.asarray(rows)[None, None, :] <= q_idx[:, :, None])[None, None]
            if key_mask is not None:
                mask_g = mask_g & key_mask[:, rows][:, None, None, None, :]
            scores_g = jnp.where(mask_g, scores_g, MASKED_SCORE)
            top = jnp.maximum(top, jnp.max(scores_g, axis=-1, keepdims=True))
        top = jax.lax.stop_gradient(top)
        weights = jnp.exp(scores - top)
        total = jnp.sum(weights, axis=-1, keepdims=True)
        out = jnp.einsum("bhgqs,bhgsd->bhgqd", weights, v_b)
        if pattern.global_tokens:
            weights_g = jnp.exp(scores_g - top)
            total = total + jnp.sum(weights_g, axis=-1, keepdims=True)
            out = out + jnp.einsum("bhgqk,bhkd->bhgqd", weights_g, v_g)
        seen = top > MASKED_SCORE / 2  # the row has at least one allowed key
        return jnp.where(seen, out / total, 0.0)

    if steps == 1:  # short sequences: no loop, which also keeps compilation (and the tests) quick
        outs = step_fn((0, jnp.asarray(q_index[0]), jnp.asarray(k_index[0])))[None]
    else:
        outs = jax.lax.map(step_fn, (jnp.arange(steps), jnp.asarray(q_index), jnp.asarray(k_index)))
    out = jnp.moveaxis(outs, 0, 2).reshape(batch, heads, steps * group * tile, -1)
    if plan.key_offset is not None:
        return out[:, :, :seq_len]
    return out[:, :, jnp.asarray(plan.inverse)]


def _global_rows(q_g, k, v, pattern, key_mask, scale):
    """Rows of the global queries q_g (b, h, g, d): each sees every key (before it, when causal)."""
    rows = np.asarray(pattern.global_tokens)
    scores = jnp.einsum("bhgd,bhkd->bhgk", q_g, k) * scale
    mask = jnp.ones(scores.shape[2:], bool)[None, None]
    if pattern.causal:
        mask = mask & (jnp.arange(k.shape[2])[None, :] <= jnp.asarray(rows)[:, None])[None, None]
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]
    return jnp.einsum("bhgk,bhkd->bhgd", masked_softmax_weights(scores, mask), v)


def banded_hybrid_attention(
    q, k, v, pattern: AttentionPattern, *, key_mask=None, global_qkv=None, scale=None, block_size=None
):
    """Banded O(n*(w+g)) hybrid attention; arguments as in `frugal.transforms.attention.hybrid_attention`."""
    batch, seq_len, num_heads, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    to_bhnd = functools.partial(jnp.transpose, axes=(0, 2, 1, 3))
    qh, kh, vh = to_bhnd(q), to_bhnd(k), to_bhnd(v)
    dilations = pattern.head_dilations(num_heads)
    out_heads = [None] * num_heads
    for dilation in sorted(set(dilations)):
        heads = [h for h in range(num_heads) if dilations[h] == dilation]
        select = (slice(None),) if len(heads) == num_heads else (np.asarray(heads),)
        plan = make_tile_plan(pattern, seq_len, dilation, block_size)
        out = _banded_group(qh[:, select[0]], kh[:, select[0]], vh[:, select[0]], pattern, plan, key_mask, scale)
        if len(heads) == num_heads:
            out_all = out
            break
        for i, h in enumerate(heads):
            out_heads[h] = out[:, i]
    else:
        out_all = jnp.stack(out_heads, axis=1)

    if pattern.global_tokens:
        rows = np.asarray(pattern.global_tokens)
        if global_qkv is not None:
            q_src = to_bhnd(global_rows(global_qkv[0], pattern, seq_len))
            k_src, v_src = to_bhnd(global_qkv[1]), to_bhnd(global_qkv[2])
        else:
            q_src, k_src, v_src = to_bhnd(q[:, rows]), kh, vh
        out_g = _global_rows(q_src, k_src, v_src, pattern, key_mask, scale)
        out_all = out_all.at[:, :, rows].set(out_g.astype(out_all.dtype))
    return jnp.transpose(out_all, (0, 2, 1, 3))


__all__ = ["TilePlan", "banded_hybrid_attention", "make_tile_plan"]
