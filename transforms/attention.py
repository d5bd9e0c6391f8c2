"""SALO-style hybrid sparse attention: sliding windows, dilation, global tokens, 1-D and 2-D.

A pattern says which keys each query may see:

* a sliding window of `left` keys before and `right` keys after the query, **both edges inclusive**
  (a query at position i sees keys i - left*d ... i + right*d, i.e. left + right + 1 keys including
  itself, where d is the dilation). `window=512` as one integer is Longformer's convention and means
  (256, 256); `window=15` means (7, 7), ViL's 15x15.
* dilation d (one value, or one per head): only every d-th key inside the stretched window;
* global tokens (sequence indices): symmetric, a global token attends to every key and every query
  attends to it (Longformer, ViL);
* `grid=(H, W)`: a 2-D window over an H x W token grid (ViL). The non-global tokens, in sequence
  order, are the grid in raster order, so the sequence length must be H*W + len(global_tokens);
  the window (and dilation) apply to rows and columns alike;
* `causal=True`: additionally no key after the query (sequence positions);
* a per-example key padding mask, passed to `hybrid_attention(key_mask=...)` because it is data.

`hybrid_attention(q, k, v, pattern, impl=...)` computes softmax(q k^T * scale + mask) v with
q, k, v laid out (batch, seq, heads, head_dim) as in `jax.nn.dot_product_attention`:

* `"dense"`: the masked O(n^2) reference;
* `"banded"`: pure XLA, O(n*(w+g)) time and memory (`frugal.transforms.attention_banded`), the CPU path;
* `"pallas"`: the block-sparse flash-attention kernel in `frugal.jaxlib_ext.hybrid_attention` (1-D patterns;
  2-D grids go through "banded"), interpreted on CPU (slow; for tests), compiled on GPU/TPU;
* `"auto"`: dense for short sequences, banded otherwise.

Rows that can see no key at all (everything padded) come out as zeros, with zero gradients.
Longformer's separate global projections are supported through `global_qkv=(q_g, k_g, v_g)`: the
rows of global queries are computed from q_g against k_g/v_g over all keys, every other row uses
q/k/v (including for the global keys), exactly as in Hugging Face's `LongformerSelfAttention`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("dense", "banded", "pallas", "auto")

# A finite stand-in for -inf: masked scores never produce NaN in values or gradients.
MASKED_SCORE = -1e30


def _as_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class AttentionPattern:
    """Which keys each query attends to (see the module docstring for the exact semantics).

    Attributes:
      window: `(left, right)` inclusive extents (>= 0 each, not both needed), or one positive int w
        meaning (w // 2, w // 2).
      dilation: a positive int, or a tuple with one positive int per head.
      global_tokens: sequence indices of the global tokens (symmetric global attention).
      grid: `(H, W)` for 2-D windows over the non-global tokens, or None for a 1-D window.
      causal: also hide every key after the query.
    """

    window: tuple[int, int] | int = (256, 256)
    dilation: int | tuple[int, ...] = 1
    global_tokens: tuple[int, ...] = ()
    grid: tuple[int, int] | None = None
    causal: bool = False

    def __post_init__(self):
        window = self.window
        if isinstance(window, (int, np.integer)) and not isinstance(window, bool):
            if window <= 0:
                raise ValueError(
                    f"window={window} must be positive (an int w means (w // 2, w // 2)), "
                    "or pass window=(left, right) with left, right >= 0"
                )
            window = (int(window) // 2, int(window) // 2)
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            raise ValueError(f"window={self.window!r} must be (left, right) or a positive int")
        left, right = (_as_int(w, "window") for w in window)
        if left < 0 or right < 0:
            raise ValueError(f"window=({left}, {right}): both extents must be >= 0")
        object.__setattr__(self, "window", (left, right))

        dilation = self.dilation
        if isinstance(dilation, (list, tuple)):
            if not dilation:
                raise ValueError("dilation=(): give one int, or one positive int per head")
            dilation = tuple(_as_int(d, "dilation") for d in dilation)
        else:
            dilation = _as_int(dilation, "dilation")
        if min(np.atleast_1d(dilation)) < 1:
            raise ValueError(f"dilation={self.dilation!r}: every dilation must be >= 1")
        object.__setattr__(self, "dilation", dilation)

        try:
            tokens = tuple(int(_as_int(t, "global_tokens")) for t in self.global_tokens)
        except TypeError:
            raise TypeError(f"global_tokens={self.global_tokens!r} must be a sequence of ints") from None
        if any(t < 0 for t in tokens):
            raise ValueError(f"global_tokens={tokens}: indices must be >= 0")
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"global_tokens={tokens}: indices must be distinct")
        object.__setattr__(self, "global_tokens", tuple(sorted(tokens)))

        if self.grid is not None:
            if not isinstance(self.grid, (tuple, list)) or len(self.grid) != 2:
                raise ValueError(f"grid={self.grid!r} must be (height, width) or None")
            height, width = (_as_int(g, "grid") for g in self.grid)
            if height < 1 or width < 1:
                raise ValueError(f"grid=({height}, {width}): both sides must be >= 1")
            object.__setattr__(self, "grid", (height, width))
        if not isinstance(self.causal, (bool, np.bool_)):
            raise TypeError(f"causal={self.causal!r} must be a bool")

    # ----------------------------------------------------------------------------------------
    @classmethod
    def longformer(cls, attention_window: int = 512, global_tokens: Sequence[int] = (0,), **kw):
        """Longformer's pattern: `attention_window` // 2 keys on each side plus global tokens."""
        return cls(window=attention_window, global_tokens=tuple(global_tokens), **kw)

    @classmethod
    def vil(cls, height: int, width: int, window: int = 15, num_global: int = 1, **kw):
        """Vision Longformer: a window x window 2-D window on an H x W grid, global tokens first."""
        return cls(window=window, global_tokens=tuple(range(num_global)), grid=(height, width), **kw)

    def validate(self, seq_len: int, num_heads: int) -> None:
        """Raises ValueError when this pattern cannot apply to `seq_len` tokens and `num_heads` heads."""
        if self.global_tokens and self.global_tokens[-1] >= seq_len:
            raise ValueError(
                f"global_tokens={self.global_tokens}: index {self.global_tokens[-1]} is out of "
                f"range for a sequence of {seq_len} tokens (allowed 0..{seq_len - 1})"
            )
        if isinstance(self.dilation, tuple) and len(self.dilation) not in (1, num_heads):
            raise ValueError(
                f"dilation={self.dilation}: per-head dilation needs {num_heads} values "
                f"(one per head), got {len(self.dilation)}"
            )
        if self.grid is not None:
            height, width = self.grid
            expected = height * width + len(self.global_tokens)
            if seq_len != expected:
                raise ValueError(
                    f"grid={self.grid} with {len(self.global_tokens)} global token(s) needs a "
                    f"sequence of {height}*{width}+{len(self.global_tokens)}={expected} tokens, "
                    f"got {seq_len}"
                )

    def head_dilations(self, num_heads: int) -> tuple[int, ...]:
        if isinstance(self.dilation, tuple):
            return self.dilation * num_heads if len(self.dilation) == 1 else self.dilation
        return (self.dilation,) * num_heads

    def local_positions(self, seq_len: int) -> np.ndarray:
        """Sequence positions of the tokens the window slides over, in window order.

        1-D: every position (a global token also has a window, though its row is replaced by its
        global row). 2-D: the non-global positions, which form the grid in raster order.
        """
        if self.grid is None:
            return np.arange(seq_len)
        is_global = np.zeros(seq_len, bool)
        is_global[list(self.global_tokens)] = True
        return np.flatnonzero(~is_global)

    def num_keys_per_query(self, seq_len: int) -> float:
        """Average number of keys a query sees (ignoring padding): the work per row of a sparse kernel.

        Exact from the mask up to 4,096 tokens; beyond that counted per row in O(n) (a global token
        that falls inside a window may be counted twice there, a relative error below g/w).
        """
        num_heads = len(self.dilation) if isinstance(self.dilation, tuple) else 1
        if seq_len <= 4096:
            return float(np.asarray(dense_mask(self, seq_len, num_heads)).sum(-1).mean())
        left, right = self.window
        counts = []
        for d in self.head_dilations(num_heads):

            def span(index, size):
                lo = np.maximum(-left, -(index // d))
                hi = np.minimum(right, (size - 1 - index) // d)
                return hi - lo + 1

            if self.grid is None:
                idx = np.arange(seq_len)
                local = span(idx, seq_len)
                if self.causal:
                    local = np.minimum(right, 0) - np.maximum(-left, -(idx // d)) + 1
            else:
                height, width = self.grid
                r, c = np.divmod(np.arange(height * width), width)
                local = span(r, height) * span(c, width)
            g = len(self.global_tokens)
            per_row = local.sum() + g * len(local) + g * seq_len
            counts.append(per_row / seq_len)
        return float(np.mean(counts))


# ----------------------------------------------------------------------------------------------
# The dense reference.


def _coordinates(pattern: AttentionPattern, seq_len: int):
    """(row, col, is_local) per sequence position; 1-D uses row 0 and col = position."""
    rows = np.zeros(seq_len, np.int32)
    cols = np.arange(seq_len, dtype=np.int32)
    local = np.ones(seq_len, bool)
    if pattern.grid is not None:
        local[:] = False
        positions = pattern.local_positions(seq_len)
        local[positions] = True
        rows[positions], cols[positions] = np.divmod(np.arange(len(positions)), pattern.grid[1])
        rows[~local] = -(10**8)  # far from everything
    return rows, cols, local


def dense_mask(pattern: AttentionPattern, seq_len: int, num_heads: int) -> jax.Array:
    """The boolean (heads or 1, seq, seq) mask of `pattern`, computed from O(n) constants.

    Built with jnp ops so that under jit it is an iota-style computation XLA can fuse, not an n^2
    constant baked into the program.
    """
    pattern.validate(seq_len, num_heads)
    rows, cols, local = _coordinates(pattern, seq_len)
    dilations = np.asarray(
        pattern.head_dilations(num_heads) if isinstance(pattern.dilation, tuple) else (pattern.dilation,), np.int32
    )[:, None, None]
    left, right = pattern.window
    d_row = jnp.asarray(rows)[None, None, :] - jnp.asarray(rows)[None, :, None]
    d_col = jnp.asarray(cols)[None, None, :] - jnp.asarray(cols)[None, :, None]

    def in_window(delta):
        return (delta >= -left * dilations) & (delta <= right * dilations) & (delta % dilations == 0)

    mask = in_window(d_col)
    if pattern.grid is not None:
        mask = mask & in_window(d_row)
        local_j = jnp.asarray(local)
        mask = mask & local_j[None, :, None] & local_j[None, None, :]
    if pattern.global_tokens:
        is_global = np.zeros(seq_len, bool)
        is_global[list(pattern.global_tokens)] = True
        g = jnp.asarray(is_global)
        mask = mask | g[None, :, None] | g[None, None, :]
    if pattern.causal:
        pos = jnp.arange(seq_len)
        mask = mask & (pos[None, None, :] <= pos[None, :, None])
    return mask


def masked_softmax_weights(scores: jax.Array, mask: jax.Array, axis=-1) -> jax.Array:
    """Softmax over `axis` restricted to `mask`; rows with no allowed entry give all zeros."""
    scores = jnp.where(mask, scores, MASKED_SCORE)
    top = jax.lax.stop_gradient(jnp.max(scores, axis=axis, keepdims=True))
    weights = jnp.where(mask, jnp.exp(scores - top), 0.0)
    total = jnp.sum(weights, axis=axis, keepdims=True)
    return weights / jnp.where(total > 0, total, 1.0)


def _dense_rows(q, k, v, mask, key_mask, scale):
    # q (b, n_q, h, d); mask broadcastable to (b, h, n_q, n_k)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]
    weights = masked_softmax_weights(scores, mask)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def global_rows(q_global, pattern: AttentionPattern, seq_len: int):
    """The global tokens' rows of `q_global`, which holds either every row or only those."""
    if q_global.shape[1] == seq_len:
        return q_global[:, np.asarray(pattern.global_tokens)]
    return q_global


def dense_hybrid_attention(q, k, v, pattern, *, key_mask=None, global_qkv=None, scale=None):
    """Masked O(n^2) reference; see `hybrid_attention` for the arguments."""
    batch, seq_len, num_heads, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    mask = dense_mask(pattern, seq_len, num_heads)[None]
    out = _dense_rows(q, k, v, mask, key_mask, scale)
    if global_qkv is not None and pattern.global_tokens:
        q_g, k_g, v_g = global_qkv
        rows = np.asarray(pattern.global_tokens)
        row_mask = mask[:, :, rows, :]
        out_g = _dense_rows(global_rows(q_g, pattern, seq_len), k_g, v_g, row_mask, key_mask, scale)
        out = out.at[:, rows].set(out_g.astype(out.dtype))
    return out


# ----------------------------------------------------------------------------------------------
# The public entry point.


def _check_inputs(q, k, v, pattern, key_mask, global_qkv, impl, scale=None):
    if not isinstance(pattern, AttentionPattern):
        raise TypeError(f"pattern must be an AttentionPattern, got {type(pattern).__name__}")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl={impl!r} is not known; use one of {IMPLEMENTATIONS}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(
                f"{name} must be shaped (batch, seq, heads, head_dim), got shape {getattr(x, 'shape', None)}"
            )
    if q.shape[:3] != k.shape[:3] or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"q, k, v must agree on (batch, seq, heads); got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"mismatched head dims: q has head_dim {q.shape[-1]} but k has {k.shape[-1]}")
    if q.shape[1] < 1:
        raise ValueError("the sequence is empty (seq = 0); attention needs at least one token")
    if scale is not None and not isinstance(scale, jax.core.Tracer) and not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    if global_qkv is not None:
        if len(global_qkv) != 3:
            raise ValueError("global_qkv must be a tuple (q_global, k_global, v_global)")
        for name, x, ref in zip(("q_global", "k_global", "v_global"), global_qkv, (q, k, v)):
            shape = getattr(x, "shape", None)
            rows_only = (
                name == "q_global"
                and shape is not None
                and len(shape) == 4
                and shape[1] == len(pattern.global_tokens)
                and shape[::2] == ref.shape[::2]
                and shape[-1] == ref.shape[-1]
            )
            if shape != ref.shape and not rows_only:
                raise ValueError(
                    f"global_qkv: {name} must have the shape of its local counterpart "
                    f"{ref.shape}"
                    + (
                        f" (q_global may also hold only the global rows, seq={len(pattern.global_tokens)})"
                        if name == "q_global"
                        else ""
                    )
                    + f", got {shape}"
                )
    if key_mask is not None and getattr(key_mask, "shape", None) != q.shape[:2]:
        raise ValueError(f"key_mask must be shaped (batch, seq)={q.shape[:2]}, got {getattr(key_mask, 'shape', None)}")
    pattern.validate(q.shape[1], q.shape[2])


def hybrid_attention(
    q,
    k,
    v,
    pattern: AttentionPattern,
    *,
    impl: str = "auto",
    key_mask=None,
    global_qkv=None,
    scale: float | None = None,
    block_size: int | None = None,
    interpret: bool | None = None,
):
    """Sparse attention over `pattern` with q, k, v shaped (batch, seq, heads, head_dim).

    Args:
      q, k, v: query, key and value arrays; q and k must share head_dim.
      pattern: an `AttentionPattern` (hashable; a static argument under jit).
      impl: "dense", "banded", "pallas" or "auto" (1-D patterns: the Pallas kernel when the program is
        lowered for GPU or TPU; otherwise, and for 2-D patterns, dense up to 512 tokens and banded
        beyond).
      key_mask: optional (batch, seq) bool array, True for real tokens; False keys are never attended.
      global_qkv: optional (q_global, k_global, v_global), Longformer's separate global projections;
        q_global may hold every row or only the global tokens' rows (seq = len(global_tokens)).
      scale: score scale, default 1/sqrt(head_dim).
      block_size: query tile size for "banded"/"pallas" (a performance knob; results do not depend on it).
      interpret: Pallas interpret mode (default: True on CPU).

    Returns:
      (batch, seq, heads, v_head_dim) attention output.
    """
    _check_inputs(q, k, v, pattern, key_mask, global_qkv, impl, scale)
    if key_mask is not None:
        key_mask = jnp.asarray(key_mask).astype(bool)
    if impl == "auto":
        xla = "dense" if q.shape[1] <= 512 else "banded"
        # 1-D patterns: the Pallas kernel where the program is lowered for GPU or TPU (chosen per
        # platform at lowering time, so one jitted or exported function serves all of them).
        impl = xla if pattern.grid is not None else f"auto:{xla}"
    if impl == "pallas" and pattern.grid is not None:
        raise ValueError(
            f"impl='pallas' supports 1-D patterns (grid=None); use impl='banded' or 'dense' for grid={pattern.grid}"
        )
    if scale is not None:
        try:
            scale = float(scale)
        except (TypeError, jax.errors.ConcretizationTypeError):
            raise TypeError(f"scale must be a Python number or None, got {type(scale).__name__}") from None
    return _named_attention(pattern, impl, scale, block_size, interpret)(q, k, v, key_mask, global_qkv)


def attention_call_name(pattern: AttentionPattern) -> str:
    """The name under which a `hybrid_attention` call appears in a jaxpr (a `jit` equation's `name`).

    Cost models find attention by this name instead of counting its internals as plain GEMMs
    (`frugal.accel.trace_workload` parses it; the format is a contract, tested on both sides):
    `frugal_hybrid_attention__w{left}_{right}__d{dilation, per head joined by x}__g{number of global
    tokens}__grid{H}x{W} (0x0 for 1-D)__c{causal 0/1}`. Only letters, digits and underscores, so the
    name is also a valid symbol in the lowered program.
    """
    left, right = pattern.window
    dilation = pattern.dilation if isinstance(pattern.dilation, tuple) else (pattern.dilation,)
    height, width = pattern.grid if pattern.grid is not None else (0, 0)
    return (
        f"frugal_hybrid_attention__w{left}_{right}__d{'x'.join(str(d) for d in dilation)}"
        f"__g{len(pattern.global_tokens)}__grid{height}x{width}__c{int(pattern.causal)}"
    )


@functools.lru_cache(maxsize=512)
def _named_attention(pattern: AttentionPattern, impl: str, scale, block_size, interpret):
    """One jitted function per static configuration, named by `attention_call_name`: under an outer jit
    it is inlined; called eagerly it compiles once per configuration (hence the cache). NaN/inf
    follow `propagate_nonfinite_values` on every implementation."""
    from frugal.jaxlib_ext.hybrid_attention import propagate_nonfinite_values

    def attend(q, k, v, key_mask, global_qkv):
        def call(q, k, v, global_qkv):
            return _hybrid_attention_impl(
                q,
                k,
                v,
                pattern,
                impl=impl,
                key_mask=key_mask,
                global_qkv=global_qkv,
                scale=scale,
                block_size=block_size,
                interpret=interpret,
            )

        return propagate_nonfinite_values(call, q, k, v, global_qkv, pattern.global_tokens)

    attend.__name__ = attend.__qualname__ = attention_call_name(pattern)
    return jax.jit(attend)


def _hybrid_attention_impl(q, k, v, pattern, *, impl, key_mask, global_qkv, scale, block_size, interpret, backend=None):
    if impl.startswith("auto:"):
        xla = impl.split(":", 1)[1]

        def on(backend_impl, backend=None):
            def run(q, k, v, key_mask, global_qkv):
                return _hybrid_attention_impl(
                    q,
                    k,
                    v,
                    pattern,
                    impl=backend_impl,
                    key_mask=key_mask,
                    global_qkv=global_qkv,
                    scale=scale,
                    # Mosaic TPU tiles the key vectors' lane axis by 128; Triton takes 64.
                    block_size=block_size if backend_impl != "pallas" else (128 if backend == "mosaic_tpu" else None),
                    interpret=False if backend else interpret,
                    backend=backend,
                )

            return run

        return jax.lax.platform_dependent(
            q, k, v, key_mask, global_qkv, cuda=on("pallas", "triton"), tpu=on("pallas", "mosaic_tpu"), default=on(xla)
        )
    if impl == "dense":
        return dense_hybrid_attention(q, k, v, pattern, key_mask=key_mask, global_qkv=global_qkv, scale=scale)
    if impl == "banded":
        from frugal.transforms.attention_banded import banded_hybrid_attention

        return banded_hybrid_attention(
            q, k, v, pattern, key_mask=key_mask, global_qkv=global_qkv, scale=scale, block_size=block_size
        )
    from frugal.jaxlib_ext.hybrid_attention import hybrid_attention_pallas

    return hybrid_attention_pallas(
        q,
        k,
        v,
        window=pattern.window,
        dilation=pattern.head_dilations(q.shape[2]),
        global_tokens=pattern.global_tokens,
        causal=pattern.causal,
        key_mask=key_mask,
        global_qkv=global_qkv,
        scale=scale,
        block_size=block_size,
        interpret=interpret,
        backend=backend,
        check_finite=False,  # `_named_attention` applies the NaN/inf contract around every path
    )


def attention_flops(seq_len: int, pattern: AttentionPattern | None, num_heads: int, head_dim: int) -> float:
    """Multiply-add FLOPs of the score and value products (2 * 2 * keys * head_dim per query and head).

    `pattern=None` means dense attention. The ratio dense / sparse is the FLOP-ratio bound on the
    speedup a sparse implementation can reach.
    """
    keys = seq_len if pattern is None else pattern.num_keys_per_query(seq_len)
    return 4.0 * seq_len * keys * num_heads * head_dim


__all__ = [
    "AttentionPattern",
    "IMPLEMENTATIONS",
    "attention_flops",
    "dense_hybrid_attention",
    "dense_mask",
    "hybrid_attention",
    "masked_softmax_weights",
]
