"""Quantizing a whole Flax NNX model with ANT numeric types: rules, calibration (PTQ) and QAT.

How it works. We build on qwix's interception: `qwix.quantize_model` patches
`jax.lax.dot_general`, `jax.numpy.einsum` and `jax.lax.conv_general_dilated` while the model runs
and tracks which NNX module (by '/'-joined path) is calling, so model code does not change. On top
of it sits our own provider (`_AntProvider`), because ANT needs what qwix's built-in providers lack
(qwix ships integer and fp8 types only): lookup-table grids (int/PoT/float/flint), a
trainable clip value alpha with an LSQ-like gradient, an unmasked straight-through estimator, and
signed weights with unsigned activations in convolutions.

The flow, as in the ANT reference (select once from calibration data, then fine-tune):

1. `QuantRule`s, an ordered list matched by `re.fullmatch` on the module path (first match wins,
   `op_names` narrows it): bits and candidate kinds for weights and for layer inputs. Ops that
   no rule matches, and ops without a weight operand (attention's QK^T and PV), stay in float.
2. `collect_layer_inputs(model, rules, batches)` runs the model (jitted; a host callback ships
   the values out) on a few batches and records, per quantized op, its weight and its inputs.
3. `select_plan(samples)` runs the type selection (`frugal.transforms.quant.select_numeric_type`) per
   tensor: weights per output channel, inputs per tensor, signedness from the data. The result
   is a `QuantPlan`: the chosen type and alpha of every tensor, in call order.
4. `apply_plan(model, plan)` returns a fake-quantized copy whose alphas are
   `QuantAlpha` parameters (a subclass of `nnx.Param`): evaluate it (PTQ) or train it (QAT) with
   any NNX training loop; gradients reach the weights (straight-through) and the alphas.

`ptq(model, rules, batches)` chains 2-4. The qwix internals this needs are
wrapped in `frugal.transforms.quant.qwix_adapter` (qwix pinned to 0.1.8 there). Mixed precision
policies (ANT4-8) live in
`frugal.transforms.quant.mixed_precision` and produce plans through the same `select_plan`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx

from frugal.transforms.quant import qwix_adapter
from frugal.transforms.quant.numerics import ALL_KINDS, OLIVE_KINDS, NumericType, pack_int4
from frugal.transforms.quant.quantizer import quantize, quantize_to_codes
from frugal.transforms.quant.selection import TypeChoice, select_numeric_type

OP_NAMES = ("dot_general", "conv_general_dilated", "einsum")


class QuantAlpha(nnx.Param):
    """A trainable clip value created by `apply_plan` (filter on it to train or freeze alphas)."""


def _check_bits(value, name: str):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 2 <= value <= 8:
        raise ValueError(f"{name}={value!r} must be an int in 2..8, or None to keep that operand in float")


def _check_kinds(kinds, name: str) -> tuple:
    if isinstance(kinds, (str, NumericType)):
        kinds = (kinds,)
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError(f"{name} must name at least one of {ALL_KINDS}")
    for kind in kinds:
        if not isinstance(kind, (str, NumericType)) or (isinstance(kind, str) and kind not in ALL_KINDS):
            raise ValueError(f"{name} entries must be kinds from {ALL_KINDS} (or NumericTypes), got {kind!r}")
    return kinds


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantRule(qwix.QuantizationRule):
    """How to quantize the ops of the modules whose path matches `module_path` (re.fullmatch).

    Attributes (besides qwix's `module_path` and `op_names`, which do the matching):
      weight_bits, act_bits: widths 2..8, or None to leave that operand in float.
      weight_kinds, act_kinds: candidate kinds; type selection keeps the lowest-MSE one
        (one kind = a fixed type; ("int",) is plain integer quantization).
      act_signed: None decides from the calibration data (min < 0 -> signed), like the reference.
      alpha_range, alpha_step: the clip values swept, as fractions of max|x|.
    """

    weight_bits: int | None = 4
    act_bits: int | None = 4
    weight_kinds: tuple = ("int",)
    act_kinds: tuple = ("int",)
    act_signed: bool | None = None
    alpha_range: tuple = (0.75, 1.5)
    alpha_step: float = 0.01

    def __post_init__(self):
        if not isinstance(self.module_path, str):
            raise TypeError(f"module_path must be a regex string, got {self.module_path!r}")
        try:
            re.compile(self.module_path)
        except re.error as err:
            raise ValueError(f"module_path={self.module_path!r} is not a valid regex: {err}") from None
        unknown = set(self.op_names) - set(OP_NAMES)
        if unknown:
            raise ValueError(f"op_names {sorted(unknown)} are not intercepted; use names from {OP_NAMES}")
        _check_bits(self.weight_bits, "weight_bits")
        _check_bits(self.act_bits, "act_bits")
        object.__setattr__(self, "weight_kinds", _check_kinds(self.weight_kinds, "weight_kinds"))
        object.__setattr__(self, "act_kinds", _check_kinds(self.act_kinds, "act_kinds"))
        if self.act_signed not in (None, True, False):
            raise TypeError(f"act_signed must be None, True or False, got {self.act_signed!r}")
        lo, hi = self.alpha_range
        if not 0 < lo < hi:
            raise ValueError(f"alpha_range={self.alpha_range!r} must satisfy 0 < low < high")
        if not self.alpha_step > 0:
            raise ValueError(f"alpha_step={self.alpha_step!r} must be > 0")

    @property
    def quantizes(self) -> bool:
        return self.weight_bits is not None or self.act_bits is not None


def first_matching_rule(rules: Sequence[QuantRule], path: str, op_name: str) -> QuantRule | None:
    """The rule that applies to `op_name` in the module at `path` (first match wins), or None."""
    for rule in rules:
        if re.fullmatch(rule.module_path, path) and (not rule.op_names or op_name in rule.op_names):
            return rule
    return None


# ------------------------------------------------------------------------------------------------
# Plans: what was chosen for every quantized tensor


@dataclasses.dataclass(frozen=True)
class TensorQuant:
    """The chosen number format of one tensor: type, clip value(s), and the selection's errors."""

    ntype: NumericType
    alpha: Any  # float (per tensor) or float32 array with one value per output channel
    mse: float
    mse_per_candidate: dict

    @property
    def kind(self) -> str:
        return self.ntype.kind


@dataclasses.dataclass(frozen=True)
class LayerQuant:
    """One intercepted op: module path, qwix op id ('dot_general0'), and its weight/input formats."""

    path: str
    op_id: str
    op_name: str
    weight: TensorQuant | None
    act: TensorQuant | None

    @property
    def key(self) -> str:
        return f"{self.path}:{self.op_id}"

    @property
    def mse(self) -> float:
        """Weight MSE + input MSE, the quantity ANT ranks layers by for extra 8-bit precision."""
        return sum(t.mse for t in (self.weight, self.act) if t is not None)


@dataclasses.dataclass(frozen=True)
class QuantPlan:
    """The formats of every quantized op of a model, in the order the model calls them."""

    layers: tuple[LayerQuant, ...]

    def __post_init__(self):
        keys = [layer.key for layer in self.layers]
        if len(set(keys)) != len(keys):
            raise ValueError("QuantPlan has duplicate layer keys")

    def lookup(self, path: str, op_id: str) -> LayerQuant | None:
        return self.by_key.get(f"{path}:{op_id}")

    @property
    def by_key(self) -> dict[str, LayerQuant]:
        return {layer.key: layer for layer in self.layers}

    def kind_counts(self, role: str = "weight") -> dict[str, int]:
        """How many layers got each type name ('flint4s', 'int8u', ...) for 'weight' or 'act'."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            tensor = getattr(layer, role)
            if tensor is not None:
                counts[tensor.ntype.name] = counts.get(tensor.ntype.name, 0) + 1
        return counts

    def rows(self) -> list[tuple]:
        """(layer, weight type, weight mse, input type, input mse) per layer, for tables."""

        def name(t):
            return "float" if t is None else t.ntype.name

        return [
            (
                layer.key,
                name(layer.weight),
                layer.weight.mse if layer.weight else 0.0,
                name(layer.act),
                layer.act.mse if layer.act else 0.0,
            )
            for layer in self.layers
        ]


# ------------------------------------------------------------------------------------------------
# The provider: one class, two modes (record calibration data, or fake-quantize by a plan)


# Each returns (per-channel alpha axis = the weight's output features, OliVe pair axis = the
# weight's contraction axis, along which neighbours are multiplied into the same output).


def _weight_axes_dot(rhs_ndim: int, dimension_numbers) -> tuple[int, int]:
    (_, rhs_contract), (_, rhs_batch) = dimension_numbers
    free = [d for d in range(rhs_ndim) if d not in rhs_contract and d not in rhs_batch]
    return (free[-1] if free else rhs_ndim - 1), (rhs_contract[-1] if rhs_contract else 0)


def _weight_axes_conv(lhs_shape, rhs_shape, dimension_numbers) -> tuple[int, int]:
    dn = jax.lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    return dn.rhs_spec[0], dn.rhs_spec[1]  # output-feature and input-feature dimensions


@dataclasses.dataclass
class LayerSamples:
    """What calibration saw at one op: its weight, and samples of its input (float32 NumPy)."""

    path: str
    op_id: str
    op_name: str
    rule: QuantRule
    weight: np.ndarray
    weight_axis: int
    weight_pair_axis: int
    activations: list[np.ndarray]

    @property
    def key(self) -> str:
        return f"{self.path}:{self.op_id}"


IMPLS = ("fake", "pallas", "reference")


class PackedWeight(nnx.Variable):
    """A weight's 4-bit codes packed two per byte along K, or its per-column scale: what the ANT
    kernel path reads instead of the float kernel. Not a Param: nothing trains it."""


def _packs(layer: LayerQuant) -> bool:
    """Whether `layer` can run through the packed ANT kernel: a dot_general with 4-bit ANT types
    (int/PoT/float/flint, not OliVe) on both the weight and the input."""
    return (
        layer.op_name == "dot_general"
        and layer.weight is not None
        and layer.act is not None
        and all(t.ntype.bits == 4 and not t.ntype.is_olive for t in (layer.weight, layer.act))
        and np.ndim(layer.act.alpha) == 0
    )


def _is_dense_dot(lhs_ndim: int, rhs_ndim: int, dimension_numbers) -> bool:
    """x @ kernel with a (K, N) kernel, as nnx.Linear calls it."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    return (
        rhs_ndim == 2
        and tuple(lhs_contract) == (lhs_ndim - 1,)
        and tuple(rhs_contract) == (0,)
        and not lhs_batch
        and not rhs_batch
    )


def packed_weight(kernel, weight: TensorQuant) -> tuple[jax.Array, jax.Array]:
    """(codes packed two per byte along K, one scale per output column) of a (K, N) kernel."""
    axis = -1 if np.ndim(weight.alpha) else None
    codes, scale = quantize_to_codes(
        jnp.asarray(kernel, jnp.float32), weight.ntype, weight.alpha, axis=axis, pair_axis=0
    )
    scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32).reshape(-1), (kernel.shape[1],))
    return pack_int4(codes, axis=0), scale


class _AntProvider(qwix.QuantizationProvider):
    """qwix interception that records op inputs (`plan=None`) or quantizes by a QuantPlan: fake
    quantization, or (impl "pallas"/"reference") the packed ANT matmul for eligible dense layers."""

    def __init__(self, rules: Sequence[QuantRule], plan: QuantPlan | None = None, impl: str = "fake"):
        super().__init__(list(rules) or [QuantRule(module_path=".*")])
        self.plan = plan
        self.impl = impl
        self.records: dict[str, LayerSamples] = {}
        self.call_order: list[str] = []  # op keys in the order the model calls them (trace time)

    def get_intercept_map(self):
        return super().get_intercept_map() | {
            "jax.lax.dot_general": self.dot_general,
            "jax.lax.conv_general_dilated": self.conv_general_dilated,
            "jax.numpy.einsum": self.einsum,
        }

    def _current(self, op_name: str):
        rule, op_id = qwix_adapter.current_rule_and_op_id(self, op_name)
        path = qwix_adapter.current_module_path()
        return rule, op_id, path

    def _handle(self, op_name, rule, op_id, path, lhs, rhs, weight_axes):
        """Returns (lhs, rhs) to feed the original op: recorded as they are, or fake-quantized."""
        if self.plan is None:
            if rule is not None and rule.quantizes:
                key = f"{path}:{op_id}"
                if key not in self.call_order:
                    self.call_order.append(key)
                # A host callback works both eagerly and under jit (calibration runs jitted).
                jax.debug.callback(
                    functools.partial(self._record, key, path, op_id, op_name, rule, weight_axes), lhs, rhs
                )
            return lhs, rhs
        layer = self.plan.lookup(path, op_id)
        if layer is None:
            return lhs, rhs
        if layer.weight is not None:
            w = layer.weight
            alpha = qwix_adapter.get_or_create_param(
                f"{op_id}_weight_alpha", lambda: jnp.asarray(w.alpha, jnp.float32), QuantAlpha
            )
            axis = weight_axes[0] if np.ndim(w.alpha) else None
            rhs = quantize(rhs, w.ntype, alpha, axis=axis, pair_axis=weight_axes[1])
        if layer.act is not None:
            a = layer.act
            alpha = qwix_adapter.get_or_create_param(
                f"{op_id}_act_alpha", lambda: jnp.asarray(a.alpha, jnp.float32), QuantAlpha
            )
            lhs = quantize(lhs, a.ntype, alpha)
        return lhs, rhs

    def _record(self, key, path, op_id, op_name, rule, weight_axes, lhs, rhs):
        if key not in self.records:
            self.records[key] = LayerSamples(
                path, op_id, op_name, rule, np.asarray(rhs, np.float32), weight_axes[0], weight_axes[1], []
            )
        self.records[key].activations.append(np.asarray(lhs, np.float32))

    def _packed_dot(self, op_id: str, layer: LayerQuant, lhs):
        """The ANT kernel on packed codes: the input quantized to codes on the fly, the weight's
        codes and scales read from the PackedWeight variables `apply_plan` stored."""
        from frugal.jaxlib_ext.ant_matmul import ant_matmul

        a = layer.act
        alpha = qwix_adapter.get_or_create_param(
            f"{op_id}_act_alpha", lambda: jnp.asarray(a.alpha, jnp.float32), QuantAlpha
        )
        codes, scale = quantize_to_codes(lhs, a.ntype, alpha)
        w_codes = qwix_adapter.current_module_variable(f"{op_id}_weight_codes")
        w_scale = qwix_adapter.current_module_variable(f"{op_id}_weight_scale")
        if w_codes is None or w_scale is None:
            raise ValueError(f"no packed weight for {op_id}: build the model with apply_plan(..., impl={self.impl!r})")
        return ant_matmul(
            pack_int4(codes, axis=-1),
            jnp.reshape(scale, ()),
            w_codes,
            w_scale,
            a_format=a.ntype,
            w_format=layer.weight.ntype,
            impl=self.impl,
        )

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kw):
        rule, op_id, path = self._current("dot_general")
        if self.impl != "fake" and self.plan is not None and qwix_adapter.find_param(rhs) is not None:
            layer = self.plan.lookup(path, op_id)
            if layer is not None and _packs(layer) and _is_dense_dot(lhs.ndim, rhs.ndim, dimension_numbers):
                out = self._packed_dot(op_id, layer, lhs)
                return out.astype(preferred_element_type or jnp.result_type(lhs, rhs))
        if qwix_adapter.find_param(rhs) is not None:
            axes = _weight_axes_dot(rhs.ndim, dimension_numbers)
            lhs, rhs = self._handle("dot_general", rule, op_id, path, lhs, rhs, axes)
        return jax.lax.dot_general(
            lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type, **kw
        )

    def conv_general_dilated(
        self,
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=None,
        rhs_dilation=None,
        dimension_numbers=None,
        feature_group_count=1,
        batch_group_count=1,
        precision=None,
        preferred_element_type=None,
        **kw,
    ):
        rule, op_id, path = self._current("conv_general_dilated")
        if qwix_adapter.find_param(rhs) is not None:
            axes = _weight_axes_conv(lhs.shape, rhs.shape, dimension_numbers)
            lhs, rhs = self._handle("conv_general_dilated", rule, op_id, path, lhs, rhs, axes)
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
            **kw,
        )

    def einsum(self, subscripts, *operands, **kw):
        # Two-operand einsums whose second operand is a weight (nnx.Einsum); the weight's channel
        # axis is its last output letter.
        if not isinstance(subscripts, str) or len(operands) != 2 or "->" not in subscripts:
            return jnp.einsum(subscripts, *operands, **kw)
        rule, op_id, path = self._current("einsum")
        lhs, rhs = operands
        if qwix_adapter.find_param(rhs) is None:
            return jnp.einsum(subscripts, lhs, rhs, **kw)
        inputs, output = subscripts.replace(" ", "").split("->")
        rhs_letters = inputs.split(",")[1]
        kept = [i for i, c in enumerate(rhs_letters) if c in output]
        summed = [i for i, c in enumerate(rhs_letters) if c not in output]
        axes = (kept[-1] if kept else rhs.ndim - 1, summed[-1] if summed else 0)
        lhs, rhs = self._handle("einsum", rule, op_id, path, lhs, rhs, axes)
        return jnp.einsum(subscripts, lhs, rhs, **kw)


# ------------------------------------------------------------------------------------------------
# Calibration and selection


@nnx.jit
def _forward(model, *args):
    return model(*args)


def _as_args(batch) -> tuple:
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


def collect_layer_inputs(model: nnx.Module, rules: Sequence[QuantRule], batches: Iterable) -> list[LayerSamples]:
    """Runs `model` on each calibration batch and records every rule-matched op's weight and input.

    `batches` yields model inputs (an array, or a tuple of positional arguments for `model(*args)`).
    The input model is not modified.
    """
    rules = list(rules)
    if not all(isinstance(r, QuantRule) for r in rules):
        raise TypeError("rules must be a sequence of QuantRule")
    batches = [_as_args(b) for b in batches]
    if not batches:
        raise ValueError("batches (calibration data) is empty; pass at least one batch")
    for args in batches:
        for a in args:
            if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating) and not np.all(np.isfinite(np.asarray(a))):
                raise ValueError("batches (calibration data) contain NaN or inf values")
    provider = _AntProvider(rules)
    recorder = qwix.quantize_model(model, provider, *batches[0], skip_nnx_init=True)
    for args in batches:
        _forward(recorder, *args)
    jax.effects_barrier()
    # Callbacks may arrive in any order; keep the model's call order (first/last layer matter).
    records = [provider.records[key] for key in provider.call_order if key in provider.records]
    if not records:
        raise ValueError("no op matched the rules (check module_path regexes against the model's module paths)")
    return records


def _activation_sample(arrays: list[np.ndarray], max_values: int, seed: int = 0) -> np.ndarray:
    """A layer's calibration inputs as rows over the last (contraction) axis, at most ~`max_values` values.

    Whole rows are kept so that OliVe's neighbour pairs stay real neighbours; the row holding the
    largest |x| is always kept, because the clip sweep is relative to max|x|.
    """
    width = arrays[0].shape[-1] if arrays[0].ndim else 1
    rows = np.concatenate([a.reshape(-1, width) for a in arrays])
    keep = max(1, max_values // width)
    if len(rows) <= keep:
        return rows
    rng = np.random.default_rng(seed)
    top = int(np.argmax(np.abs(rows).max(axis=1)))
    picked = rng.choice(np.delete(np.arange(len(rows)), top), keep - 1, replace=False)
    return rows[np.concatenate([[top], np.sort(picked)])]


class SelectionCache:
    """Memoizes type selection per tensor; answers a request for a subset of the kinds already
    swept (Int4, IP-F out of an int/PoT/flint/float sweep) without sweeping again.

    Entries are keyed by layer key, so use one cache per set of calibration samples.
    """

    def __init__(self):
        self._store: dict[tuple, TypeChoice] = {}

    def select(
        self,
        tag: str,
        x: np.ndarray,
        bits: int,
        kinds: tuple,
        signed,
        alpha_range,
        alpha_step,
        axis,
        pair_axis: int = -1,
    ):
        if signed is None:  # the reference's rule: unsigned unless the calibration data has negatives
            signed = bool(np.min(x) < 0)
        base = (tag, bits, signed, tuple(alpha_range), alpha_step, axis, pair_axis)
        for (stored_base, stored_kinds), choice in self._store.items():
            if stored_base == base and set(kinds) <= set(stored_kinds) and all(isinstance(k, str) for k in kinds):
                return _restrict(choice, kinds, bits, signed)
        olive = any(k in OLIVE_KINDS or getattr(k, "is_olive", False) for k in kinds)
        if olive:  # OliVe's clip base (mean +- 3 std) would change with padding: use the tensor as it is
            choice = select_numeric_type(
                x,
                bits,
                kinds,
                signed=signed,
                alpha_range=alpha_range,
                alpha_step=alpha_step,
                axis=axis,
                pair_axis=pair_axis,
            )
        else:
            choice = _select_padded(x, bits, kinds, signed, alpha_range, alpha_step, axis)
        self._store[(base, tuple(kinds))] = choice
        return choice


def _next_pow2(n: int, floor: int) -> int:
    return max(floor, 1 << max(0, int(n) - 1).bit_length())


# Tensors up to this many values are zero-padded to power-of-two buckets before the sweep, so that
# a model's many small layers share a few compiled sweeps instead of compiling one each.
_PAD_LIMIT = 1 << 16


def _select_padded(x, bits, kinds, signed, alpha_range, alpha_step, axis) -> TypeChoice:
    """select_numeric_type on a zero-padded copy of x, with the result mapped back exactly.

    Zeros sit on every grid (error 0) and do not change max|x|, so padding scales every
    candidate's MSE at every clip value by the same factor (real size / padded size): the
    choice and the clip values are unchanged, and the MSEs are rescaled back. Padded channels
    are all zero and are dropped from the per-channel alphas.
    """
    x = np.asarray(x, np.float32)
    if axis is None:
        flat = x.reshape(-1)
        size = flat.size
        padded = _next_pow2(size, 4096) if size <= _PAD_LIMIT else size
        data = np.pad(flat, (0, padded - size))
        channels = None
        factor = padded / size
    else:
        matrix = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
        rows, channels = matrix.shape
        if matrix.size <= _PAD_LIMIT:
            prow, pcol = _next_pow2(rows, 256), _next_pow2(channels, 16)
        else:
            prow, pcol = rows, channels
        data = np.pad(matrix, ((0, prow - rows), (0, pcol - channels)))
        factor = (prow * pcol) / (rows * channels)
    choice = select_numeric_type(
        data,
        bits,
        kinds,
        signed=signed,
        alpha_range=alpha_range,
        alpha_step=alpha_step,
        axis=None if axis is None else -1,
    )

    def alpha_back(a):
        return a if channels is None else np.asarray(a, np.float32)[:channels]

    return TypeChoice(
        kind=choice.kind,
        ntype=choice.ntype,
        alpha=alpha_back(choice.alpha),
        mse=choice.mse * factor,
        mse_per_candidate={k: v * factor for k, v in choice.mse_per_candidate.items()},
        alpha_per_candidate={k: alpha_back(v) for k, v in choice.alpha_per_candidate.items()},
        signed=choice.signed,
    )


def _restrict(choice: TypeChoice, kinds: tuple, bits: int, signed: bool) -> TypeChoice:
    scores = {k: choice.mse_per_candidate[k] for k in kinds}
    best = min(kinds, key=lambda k: (scores[k], kinds.index(k)))  # ties: earlier candidate
    ntype = NumericType(best, bits, signed or best in OLIVE_KINDS)  # OliVe types are always signed
    return TypeChoice(
        kind=best,
        ntype=ntype,
        alpha=choice.alpha_per_candidate[best],
        mse=scores[best],
        mse_per_candidate=scores,
        alpha_per_candidate={k: choice.alpha_per_candidate[k] for k in kinds},
        signed=ntype.signed,
    )


def select_plan(
    samples: Sequence[LayerSamples],
    rules: Sequence[QuantRule] | None = None,
    *,
    max_activation_values: int = 1 << 16,
    cache: SelectionCache | None = None,
) -> QuantPlan:
    """Type selection for every recorded op: weights per output channel, inputs per tensor.

    `rules` (first match wins) replaces the rules the samples were recorded with, which is how
    mixed-precision policies and user overrides re-plan without running the model again; a layer
    no rule matches stays in float. Pass one `SelectionCache` across calls to reuse sweeps.
    """
    if not samples:
        raise ValueError("samples is empty; run collect_layer_inputs first")
    cache = cache or SelectionCache()
    layers = []
    for s in samples:
        rule = s.rule if rules is None else first_matching_rule(rules, s.path, s.op_name)
        if rule is None or not rule.quantizes:
            continue
        weight = act = None
        if rule.weight_bits is not None:
            c = cache.select(
                f"{s.key}/w",
                s.weight,
                rule.weight_bits,
                rule.weight_kinds,
                True,
                rule.alpha_range,
                rule.alpha_step,
                s.weight_axis % s.weight.ndim,
                s.weight_pair_axis,
            )
            weight = TensorQuant(c.ntype, np.asarray(c.alpha, np.float32), c.mse, dict(c.mse_per_candidate))
        if rule.act_bits is not None:
            x = _activation_sample(s.activations, max_activation_values)
            c = cache.select(
                f"{s.key}/a", x, rule.act_bits, rule.act_kinds, rule.act_signed, rule.alpha_range, rule.alpha_step, None
            )
            act = TensorQuant(c.ntype, float(c.alpha), c.mse, dict(c.mse_per_candidate))
        layers.append(LayerQuant(s.path, s.op_id, s.op_name, weight, act))
    return QuantPlan(tuple(layers))


# ------------------------------------------------------------------------------------------------
# Applying a plan


def apply_plan(model: nnx.Module, plan: QuantPlan, *, impl: str = "fake") -> nnx.Module:
    """A quantized copy of `model` following `plan`; the input model is not modified.

    impl:
      "fake" (default): every quantized op runs in float on fake-quantized operands (differentiable:
        QAT trains the clip values alpha).
      "pallas": dense layers (`x @ kernel`, nnx.Linear) whose weight and input both got a 4-bit
        int/PoT/float/flint type run through `frugal.jaxlib_ext.ant_matmul` on packed codes, decoded
        inside the kernel: the weights are quantized and packed here, once (a `PackedWeight` variable
        holds K/2 x N bytes plus N scales), and the input is quantized to codes per call. Equal to
        "fake" up to float summation order. Inference only (codes have no gradient; retrain with
        "fake", then apply again). Other ops stay fake-quantized.
      "reference": the same packed path through the kernel's plain-jnp reference (any backend).
    """
    if not isinstance(plan, QuantPlan):
        raise TypeError(f"plan must be a QuantPlan, got {type(plan).__name__}")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    provider = _AntProvider([QuantRule(module_path=".*")], plan, impl=impl)
    # No eager initialization run: the alphas are created here from the plan, and the model is
    # traced only when the caller (jitted) runs it.
    quantized = qwix.quantize_model(model, provider, skip_nnx_init=True)
    modules = {"/".join(map(str, path)): module for path, module in nnx.iter_modules(quantized)}
    for layer in plan.layers:
        module = modules.get(layer.path)
        if module is None:
            raise ValueError(f"plan layer {layer.key!r} names a module path the model does not have")
        if layer.weight is not None:
            setattr(module, f"{layer.op_id}_weight_alpha", QuantAlpha(jnp.asarray(layer.weight.alpha, jnp.float32)))
        if layer.act is not None:
            setattr(module, f"{layer.op_id}_act_alpha", QuantAlpha(jnp.asarray(layer.act.alpha, jnp.float32)))
        kernel = getattr(module, "kernel", None)
        if impl != "fake" and _packs(layer) and isinstance(kernel, nnx.Param) and kernel[...].ndim == 2:
            codes, scale = packed_weight(kernel[...], layer.weight)
            setattr(module, f"{layer.op_id}_weight_codes", PackedWeight(codes))
            setattr(module, f"{layer.op_id}_weight_scale", PackedWeight(scale))
    return quantized


def packed_weight_bytes(model: nnx.Module) -> dict:
    """Weight bytes a forward pass reads for the layers that run on packed codes, packed vs float32.

    Returns {"layers": n, "packed_bytes": codes + scales, "float_bytes": the float32 kernels they
    replace, "ratio": float / packed}; all zero when no layer runs packed (impl "fake").
    """
    layers = packed = dense = 0
    for _, module in nnx.iter_modules(model):
        for name, value in vars(module).items():
            if isinstance(value, PackedWeight) and name.endswith("_weight_codes"):
                scale = getattr(module, name.replace("_weight_codes", "_weight_scale"))
                layers += 1
                codes = value.get_value()
                packed += codes.size * codes.dtype.itemsize + scale.get_value().size * 4
                kp, n = codes.shape
                dense += 2 * kp * n * 4
    return {"layers": layers, "packed_bytes": packed, "float_bytes": dense, "ratio": dense / packed if packed else 0.0}


def ptq(
    model: nnx.Module,
    rules: Sequence[QuantRule],
    batches: Iterable,
    *,
    max_activation_values: int = 1 << 16,
    impl: str = "fake",
) -> tuple[nnx.Module, QuantPlan]:
    """Post-training quantization: calibrate on `batches`, select types per tensor, apply (see
    `apply_plan` for `impl`)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    batches = [_as_args(b) for b in batches]
    samples = collect_layer_inputs(model, rules, batches)
    plan = select_plan(samples, max_activation_values=max_activation_values)
    return apply_plan(model, plan, impl=impl), plan


def strip_quantization(model: nnx.Module) -> nnx.Module:
    """The float model underneath a quantized one (a copy with the original class, alphas dropped)."""
    model = nnx.clone(model)
    if hasattr(type(model), "_unquantized_type"):
        model.__class__ = type(model)._unquantized_type
    for _, module in nnx.iter_modules(model):
        for name in [n for n, v in vars(module).items() if isinstance(v, (QuantAlpha, PackedWeight))]:
            delattr(module, name)
    return model
