"""Workloads: the GEMMs, convolutions, attention calls and element-wise work of a JAX function.

`trace_workload(fn, *args)` walks the jaxpr of any JAX function (a Flax NNX model's `__call__`
included) and lists every `dot_general` and `conv_general_dilated` as a GEMM with its shapes,
batch count and operand bit widths, plus counts of element-wise, transcendental (exp, tanh, ...)
and reduction work. Nothing is hand-written per layer; hand-written layer lists stay possible
through `conv_layer` / `linear_layer`.

Conventions (same as SCALE-Sim's GEMM view and the BitFusion/ANT simulator's im2col view):
- dot_general: M = product of the lhs free dims, N = product of the rhs free dims, K = product of
  the contracting dims, `count` = product of the batch dims.
- convolution: M = batch * output pixels, N = output channels per group, K = kernel pixels *
  input channels per group, `count` = feature groups. The kernel (rhs) is the weight operand.
- Operand bits come from the dtypes (int8 -> 8, int4 -> 4, bfloat16 -> 16, float32 -> 32) and can
  be overridden with `bits=` (a dict by op name, a sequence by op index, or a callable), which is
  how a quantization rule set maps onto the trace.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

ELEMENTWISE = frozenset(
    {
        "add",
        "sub",
        "mul",
        "div",
        "max",
        "min",
        "neg",
        "abs",
        "sign",
        "select_n",
        "clamp",
        "integer_pow",
        "square",
        "exp",
        "exp2",
        "log",
        "log1p",
        "tanh",
        "logistic",
        "erf",
        "erf_inv",
        "rsqrt",
        "sqrt",
        "pow",
        "sin",
        "cos",
        "round",
        "floor",
        "ceil",
        "expm1",
        "cbrt",
        "rem",
        "and",
        "or",
        "not",
        "ge",
        "gt",
        "le",
        "lt",
        "eq",
        "ne",
    }
)
TRANSCENDENTAL = frozenset(
    {
        "exp",
        "exp2",
        "log",
        "log1p",
        "tanh",
        "logistic",
        "erf",
        "erf_inv",
        "rsqrt",
        "sqrt",
        "pow",
        "sin",
        "cos",
        "expm1",
        "cbrt",
    }
)
REDUCTIONS = frozenset(
    {
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "argmax",
        "argmin",
        "reduce_prod",
        "reduce_window_max",
        "reduce_window_sum",
        "cumsum",
        "cummax",
    }
)
# Primitives that only move or reinterpret data: a weight stays a weight through them.
_PASS_THROUGH = frozenset(
    {
        "reshape",
        "transpose",
        "convert_element_type",
        "broadcast_in_dim",
        "squeeze",
        "expand_dims",
        "copy",
        "copy_p",
        "slice",
        "dynamic_slice",
        "rev",
        "pad",
        "concatenate",
        "mul",
        "div",
        "round",
        "clamp",
        "max",
        "min",
        "add",
        "sub",
        "sign",
        "abs",
        "stop_gradient",
        "reduce_precision",
        "bitcast_convert_type",
    }
)


@dataclasses.dataclass(frozen=True)
class GemmOp:
    """One GEMM (or convolution lowered to a GEMM) of a workload."""

    name: str
    kind: str  # "dot" or "conv"
    m: int
    n: int
    k: int
    count: int = 1
    a_bits: int = 32
    w_bits: int = 32
    a_elems: int = 0  # activation (lhs) elements read, all `count` instances together
    w_elems: int = 0  # weight (rhs) elements
    o_elems: int = 0  # output elements
    weight_is_param: bool = True  # False for activation x activation products (attention scores)

    def __post_init__(self):
        if self.kind not in ("dot", "conv"):
            raise ValueError(f"kind={self.kind!r}: use 'dot' or 'conv'")
        for field in ("m", "n", "k", "count", "a_bits", "w_bits"):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{field}={value!r} must be a positive int")

    @property
    def macs(self) -> int:
        return int(self.m) * int(self.n) * int(self.k) * int(self.count)


@dataclasses.dataclass(frozen=True)
class AttentionOp:
    """A hybrid sparse attention call: sliding window (+ dilation) plus global tokens, SALO's workload."""

    name: str
    seq_len: int
    window: int
    heads: int
    head_dim: int
    num_globals: int = 1
    batch: int = 1
    dilation: int = 1

    def __post_init__(self):
        for field in ("seq_len", "heads", "head_dim", "batch", "dilation"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}={getattr(self, field)} must be >= 1")
        if self.window < -1 or self.window == 0:
            raise ValueError(f"window={self.window}: use a positive window, or -1 when it is unknown")
        if self.num_globals < 0:
            raise ValueError(f"num_globals={self.num_globals} must be >= 0")

    @property
    def macs(self) -> int:
        """MACs of Q.K^T and A.V over the window plus the global rows/columns (2 per global token)."""
        keys = max(self.window, 0) + 2 * self.num_globals
        return 2 * self.batch * self.seq_len * keys * self.heads * self.head_dim


@dataclasses.dataclass(frozen=True)
class Workload:
    """What a function computes, in the units a cost model charges."""

    gemms: tuple[GemmOp, ...] = ()
    attention: tuple[AttentionOp, ...] = ()
    elementwise: int = 0
    transcendental: int = 0
    reductions: int = 0

    @property
    def total_macs(self) -> int:
        return sum(g.macs for g in self.gemms) + sum(a.macs for a in self.attention)

    def __len__(self) -> int:
        return len(self.gemms)

    def with_bits(self, bits) -> Workload:
        """A copy whose GEMM bit widths follow `bits` (dict by name, sequence by index, or callable)."""
        return dataclasses.replace(self, gemms=tuple(_apply_bits(self.gemms, bits)))

    def with_batch(self, batch: int) -> Workload:
        """A copy with every GEMM's M (and element counts) scaled by `batch`, as the ANT set-up runs batch 64."""
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch={batch!r} must be a positive int")
        gemms = tuple(
            dataclasses.replace(g, m=g.m * batch, a_elems=g.a_elems * batch, o_elems=g.o_elems * batch)
            for g in self.gemms
        )
        attention = tuple(dataclasses.replace(a, batch=a.batch * batch) for a in self.attention)
        return dataclasses.replace(
            self,
            gemms=gemms,
            attention=attention,
            elementwise=self.elementwise * batch,
            transcendental=self.transcendental * batch,
            reductions=self.reductions * batch,
        )

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Per-GEMM float32 arrays (m, n, k, count, a_bits, w_bits, a_elems, w_elems, o_elems): the cost
        models' input."""
        fields = ("m", "n", "k", "count", "a_bits", "w_bits", "a_elems", "w_elems", "o_elems")
        if not self.gemms:
            return {f: np.zeros((0,), np.float32) for f in fields}
        return {f: np.asarray([getattr(g, f) for g in self.gemms], np.float64).astype(np.float32) for f in fields}


def _apply_bits(gemms: Sequence[GemmOp], bits) -> list[GemmOp]:
    out = []
    for i, g in enumerate(gemms):
        if bits is None:
            choice = None
        elif callable(bits):
            choice = bits(g)
        elif isinstance(bits, Mapping):
            choice = bits.get(g.name)
        else:
            if len(bits) != len(gemms):
                raise ValueError(f"bits has {len(bits)} entries but the workload has {len(gemms)} GEMMs")
            choice = bits[i]
        if choice is None:
            out.append(g)
            continue
        if isinstance(choice, (int, np.integer)):
            choice = (int(choice), int(choice))
        a_bits, w_bits = (int(v) for v in choice)
        if a_bits < 1 or w_bits < 1:
            raise ValueError(f"bits for {g.name}: {choice!r} must be positive ints")
        out.append(dataclasses.replace(g, a_bits=a_bits, w_bits=w_bits))
    return out


def conv_layer(
    name: str,
    *,
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int] | int,
    out_hw: tuple[int, int],
    in_hw: tuple[int, int] | None = None,
    batch: int = 1,
    groups: int = 1,
    bits: int | tuple[int, int] = 8,
) -> GemmOp:
    """A hand-written convolution layer as a GEMM (im2col view)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    oh, ow = out_hw
    ih, iw = in_hw if in_hw is not None else out_hw
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
    a_bits, w_bits = (bits, bits) if isinstance(bits, int) else bits
    return GemmOp(
        name=name,
        kind="conv",
        m=batch * oh * ow,
        n=out_channels // groups,
        k=kh * kw * (in_channels // groups),
        count=groups,
        a_bits=a_bits,
        w_bits=w_bits,
        a_elems=batch * ih * iw * in_channels,
        w_elems=kh * kw * in_channels // groups * out_channels,
        o_elems=batch * oh * ow * out_channels,
    )


def linear_layer(
    name: str, *, rows: int, in_features: int, out_features: int, bits: int | tuple[int, int] = 8
) -> GemmOp:
    """A hand-written fully connected layer: (rows, in_features) @ (in_features, out_features)."""
    a_bits, w_bits = (bits, bits) if isinstance(bits, int) else bits
    return GemmOp(
        name=name,
        kind="dot",
        m=rows,
        n=out_features,
        k=in_features,
        a_bits=a_bits,
        w_bits=w_bits,
        a_elems=rows * in_features,
        w_elems=in_features * out_features,
        o_elems=rows * out_features,
    )


def dtype_bits(dtype) -> int:
    """Storage bits of a dtype (int4 -> 4, int8 -> 8, bfloat16 -> 16, float32 -> 32)."""
    dtype = jnp.dtype(dtype)
    name = dtype.name
    for width in (2, 4):
        if name.endswith(f"int{width}") or name.endswith(f"int{width}_t"):
            return width
    return dtype.itemsize * 8


class _Tracer:
    """Walks a jaxpr (recursively) and accumulates a Workload."""

    def __init__(self):
        self.gemms: list[GemmOp] = []
        self.attention: list[AttentionOp] = []
        self.elementwise = 0
        self.transcendental = 0
        self.reductions = 0
        self.counters = {"dot": 0, "conv": 0, "attn": 0}

    def _name(self, kind: str) -> str:
        index = self.counters[kind]
        self.counters[kind] += 1
        return f"{kind}{index}"

    def walk(self, jaxpr, weight_vars: set, multiplier: int) -> None:
        weights = set(weight_vars)
        for eqn in jaxpr.eqns:
            prim = eqn.primitive.name
            in_weight = [(not isinstance(v, jex_core.Literal)) and v in weights for v in eqn.invars]
            if prim == "dot_general":
                self._dot(eqn, in_weight, multiplier)
            elif prim == "conv_general_dilated":
                self._conv(eqn, in_weight, multiplier)
            elif prim in ("pjit", "jit") and self._is_attention(eqn):
                self._attention(eqn, multiplier)
                continue
            elif prim in ("pjit", "jit") and parse_ant_matmul_call_name(str(eqn.params.get("name", ""))):
                self._packed_gemm(eqn, in_weight, multiplier)
                continue
            elif self._walk_subjaxprs(eqn, in_weight, weights, multiplier):
                pass
            else:
                size = sum(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
                if prim in ELEMENTWISE:
                    self.elementwise += size * multiplier
                    if prim in TRANSCENDENTAL:
                        self.transcendental += size * multiplier
                elif prim in REDUCTIONS:
                    self.reductions += (
                        sum(
                            int(np.prod(v.aval.shape))
                            for v in eqn.invars
                            if hasattr(v, "aval") and hasattr(v.aval, "shape")
                        )
                        * multiplier
                    )
            # a weight passed through reshapes/casts/scales (or literal-only math) is still a weight
            operands = [w for v, w in zip(eqn.invars, in_weight) if not isinstance(v, jex_core.Literal)]
            if prim in _PASS_THROUGH and operands and all(operands):
                weights.update(eqn.outvars)

    def _walk_subjaxprs(self, eqn, in_weight, weights, multiplier) -> bool:
        prim = eqn.primitive.name
        subs = []
        for key, value in eqn.params.items():
            items = value if isinstance(value, (tuple, list)) else (value,)
            for item in items:
                if isinstance(item, jex_core.ClosedJaxpr):
                    subs.append((key, item.jaxpr, set(item.jaxpr.constvars)))
                elif isinstance(item, jex_core.Jaxpr):
                    subs.append((key, item, set(item.constvars)))
        if not subs:
            return False
        if prim == "cond":
            # only one branch runs: charge the most expensive one
            best = None
            for _, sub, consts in subs:
                probe = _Tracer()
                probe.walk(sub, consts | _map_weights(sub, eqn.invars[1:], in_weight[1:]), multiplier)
                if best is None or sum(g.macs for g in probe.gemms) > sum(g.macs for g in best.gemms):
                    best = probe
            self._merge(best)
            return True
        trips = int(eqn.params.get("length", 1)) if prim == "scan" else 1
        for key, sub, consts in subs:
            if prim == "while" and key == "cond_jaxpr":
                continue
            mapped = _map_weights(sub, eqn.invars, in_weight)
            self.walk(sub, consts | mapped, multiplier * trips)
        return True

    def _merge(self, other: _Tracer) -> None:
        for g in other.gemms:
            self.gemms.append(dataclasses.replace(g, name=self._name(g.kind)))
        for a in other.attention:
            self.attention.append(dataclasses.replace(a, name=self._name("attn")))
        self.elementwise += other.elementwise
        self.transcendental += other.transcendental
        self.reductions += other.reductions

    def _dot(self, eqn, in_weight, multiplier) -> None:
        lhs, rhs = (v.aval for v in eqn.invars[:2])
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        batch = _prod(lhs.shape[d] for d in lb)
        k = _prod(lhs.shape[d] for d in lc)
        m = _prod(lhs.shape[d] for d in range(lhs.ndim) if d not in lc and d not in lb)
        n = _prod(rhs.shape[d] for d in range(rhs.ndim) if d not in rc and d not in rb)
        # the weight is whichever operand derives from parameters; default to the rhs (x @ W)
        swap = in_weight[0] and not in_weight[1]
        if swap:
            m, n = n, m
            lhs, rhs = rhs, lhs
        self.gemms.append(
            GemmOp(
                name=self._name("dot"),
                kind="dot",
                m=max(m, 1),
                n=max(n, 1),
                k=max(k, 1),
                count=max(batch, 1) * multiplier,
                a_bits=dtype_bits(lhs.dtype),
                w_bits=dtype_bits(rhs.dtype),
                a_elems=_prod(lhs.shape) * multiplier,
                w_elems=_prod(rhs.shape) * multiplier,
                o_elems=_prod(eqn.outvars[0].aval.shape) * multiplier,
                weight_is_param=bool(in_weight[1] or in_weight[0]),
            )
        )

    def _conv(self, eqn, in_weight, multiplier) -> None:
        lhs, rhs = (v.aval for v in eqn.invars[:2])
        out = eqn.outvars[0].aval
        dn = eqn.params["dimension_numbers"]
        rhs_spec, out_spec = dn.rhs_spec, dn.out_spec
        groups = int(eqn.params.get("feature_group_count", 1)) * int(eqn.params.get("batch_group_count", 1))
        out_pixels = _prod(out.shape[d] for d in out_spec[2:])
        m = out.shape[out_spec[0]] * out_pixels
        n = out.shape[out_spec[1]] // groups
        k = rhs.shape[rhs_spec[1]] * _prod(rhs.shape[d] for d in rhs_spec[2:])
        self.gemms.append(
            GemmOp(
                name=self._name("conv"),
                kind="conv",
                m=max(m, 1),
                n=max(n, 1),
                k=max(k, 1),
                count=groups * multiplier,
                a_bits=dtype_bits(lhs.dtype),
                w_bits=dtype_bits(rhs.dtype),
                a_elems=_prod(lhs.shape) * multiplier,
                w_elems=_prod(rhs.shape) * multiplier,
                o_elems=_prod(out.shape) * multiplier,
                weight_is_param=bool(in_weight[1]),
            )
        )

    def _is_attention(self, eqn) -> bool:
        return parse_attention_call_name(str(eqn.params.get("name", ""))) is not None

    def _packed_gemm(self, eqn, in_weight, multiplier) -> None:
        """An ANT matmul on packed 4-bit codes: (M, K/2) x (K/2, N) bytes, K = 2 x packed width."""
        a_bits, w_bits = parse_ant_matmul_call_name(str(eqn.params["name"]))
        a_shape, w_shape = eqn.invars[0].aval.shape, eqn.invars[2].aval.shape
        m, k, n = int(a_shape[0]), 2 * int(a_shape[1]), int(w_shape[1])
        self.gemms.append(
            GemmOp(
                name=self._name("dot"),
                kind="dot",
                m=m,
                n=n,
                k=k,
                count=multiplier,
                a_bits=a_bits,
                w_bits=w_bits,
                a_elems=m * k * multiplier,
                w_elems=k * n * multiplier,
                o_elems=m * n * multiplier,
                weight_is_param=bool(in_weight[2]),
            )
        )

    def _attention(self, eqn, multiplier) -> None:
        pattern = parse_attention_call_name(str(eqn.params["name"]))
        q_shape = tuple(eqn.invars[0].aval.shape)
        self.attention.append(_attention_op(self._name("attn"), pattern, q_shape, multiplier))


def _map_weights(sub, outer_invars, outer_weight) -> set:
    """Inner invars that receive a weight, when the sub-jaxpr's inputs line up with the equation's."""
    inner = list(sub.invars)
    if len(inner) == len(outer_invars):
        return {iv for iv, w in zip(inner, outer_weight) if w}
    if len(inner) < len(outer_invars):  # e.g. leading operands consumed by the primitive itself
        offset = len(outer_invars) - len(inner)
        return {iv for iv, w in zip(inner, outer_weight[offset:]) if w}
    return set()


def _prod(values) -> int:
    return int(math.prod(int(v) for v in values))


_ATTENTION_CALL = re.compile(
    r"^frugal_hybrid_attention__w(?P<left>\d+)_(?P<right>\d+)__d(?P<dilation>\d+(?:x\d+)*)"
    r"__g(?P<globals>\d+)__grid(?P<height>\d+)x(?P<width>\d+)__c(?P<causal>[01])$"
)


def parse_attention_call_name(name: str) -> dict | None:
    """The pattern encoded in a hybrid-attention call's jit name, or None for any other name.

    The format is `frugal.transforms.attention.attention_call_name`'s (accel imports nothing from
    transforms, so both sides test the round trip): window extents, dilation per head, number of
    global tokens, the 2-D grid (0x0 for 1-D) and causality.
    """
    match = _ATTENTION_CALL.match(name)
    if match is None:
        return None
    height, width = int(match["height"]), int(match["width"])
    return {
        "window": (int(match["left"]), int(match["right"])),
        "dilation": tuple(int(d) for d in match["dilation"].split("x")),
        "num_globals": int(match["globals"]),
        "grid": None if height == 0 else (height, width),
        "causal": match["causal"] == "1",
    }


_ANT_MATMUL_CALL = re.compile(r"^frugal_ant_matmul__a(?P<a>\d+)[a-z]+[su]__w(?P<w>\d+)[a-z]+[su]$")


def parse_ant_matmul_call_name(name: str) -> tuple[int, int] | None:
    """(activation bits, weight bits) of a packed ANT matmul call's jit name, or None for any other
    name (the format of `frugal.jaxlib_ext.ant_matmul.ant_matmul_call_name`)."""
    match = _ANT_MATMUL_CALL.match(name)
    return None if match is None else (int(match["a"]), int(match["w"]))


def _attention_op(name: str, pattern: dict, q_shape, multiplier: int) -> AttentionOp:
    left, right = pattern["window"]
    side = left + right + 1
    window = side * side if pattern["grid"] is not None else side
    shape = tuple(q_shape)
    if len(shape) != 4:
        raise ValueError(f"hybrid_attention q must be (batch, seq, heads, dim), got {shape}")
    batch, seq, heads, dim = shape
    return AttentionOp(
        name=name,
        seq_len=int(seq),
        window=int(window),
        heads=int(heads),
        head_dim=int(dim),
        num_globals=pattern["num_globals"],
        batch=int(batch) * multiplier,
        dilation=int(max(pattern["dilation"])),
    )


def trace_workload(fn: Callable, *args, bits=None, param_argnums: Sequence[int] = (), **kwargs) -> Workload:
    """Traces `fn(*args, **kwargs)` to its jaxpr and returns the Workload it computes.

    Args:
      fn: any JAX-traceable function (a bound NNX model, `lambda x: model(x)`, an apply function).
      *args: example arguments; arrays or `jax.ShapeDtypeStruct`s (nothing is computed).
      bits: optional bit-width override: dict op-name -> (a_bits, w_bits) or int, a sequence with
        one entry per GEMM, or a callable GemmOp -> (a_bits, w_bits) | None.
      param_argnums: positional arguments that hold parameters (closed-over arrays, e.g. an NNX
        model's weights, are recognised as parameters automatically).

    Returns:
      A Workload with GEMMs in program order named dot0.., conv0.. and attn0.. for hybrid attention
      calls: `frugal.transforms.attention.hybrid_attention` marks each call as a `jit` equation named
      by its pattern (`parse_attention_call_name`), so it is found however it was imported or called.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    for i in param_argnums:
        if not 0 <= i < len(args):
            raise ValueError(f"param_argnums contains {i}, but only {len(args)} positional args were given")
    closed = jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)
    jaxpr = closed.jaxpr
    weights = set(jaxpr.constvars)
    # map argument leaves to invars to mark parameter arguments
    leaf_counts = [len(jax.tree_util.tree_leaves(a)) for a in args]
    start = 0
    for i, count in enumerate(leaf_counts):
        if i in param_argnums:
            weights.update(jaxpr.invars[start : start + count])
        start += count
    tracer = _Tracer()
    tracer.walk(jaxpr, weights, 1)
    workload = Workload(
        gemms=tuple(tracer.gemms),
        attention=tuple(tracer.attention),
        elementwise=tracer.elementwise,
        transcendental=tracer.transcendental,
        reductions=tracer.reductions,
    )
    return workload.with_bits(bits) if bits is not None else workload


def bits_from_plan(plan, *, float_bits: int = 32) -> list[tuple[int, int]]:
    """(a_bits, w_bits) per quantized op of a quantization plan, in call order.

    Duck-typed so accel does not import transforms: `plan.layers` is a sequence whose items have
    `.act` and `.weight`, each None (left in float) or carrying `.ntype.bits` (as
    `frugal.transforms.quant.QuantPlan` does). Pass the result as `trace_workload(..., bits=...)`; when
    every GEMM of the model is quantized, the plan's call order is the trace's GEMM order.
    """
    layers = getattr(plan, "layers", None)
    if layers is None:
        raise TypeError(f"plan must have a .layers sequence, got {type(plan).__name__}")

    def width(tensor) -> int:
        return float_bits if tensor is None else int(tensor.ntype.bits)

    return [(width(layer.act), width(layer.weight)) for layer in layers]
