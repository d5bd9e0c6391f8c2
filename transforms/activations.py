"""Nested forward-AD activations (Guo et al., ICCD 2022): store f'(x), not f's intermediates.

An element-wise activation y = f(x) has a diagonal Jacobian, so one forward-mode pass with a unit
tangent gives f'(x) for every element at once. `nested_forward_ad(f)` computes that derivative in
the forward pass and makes the backward pass a single multiply, ct * f'(x). Under reverse mode it
therefore keeps exactly one tensor per activation, where plain autodiff of a composite activation
keeps all of its intermediates (counted with `jax.ad_checkpoint.print_saved_residuals`, f32):

    activation        autodiff residuals   nested residuals   jax.checkpoint(f) residuals
    gelu (tanh)       5 (x + 4 inner)      1 (f'(x))          1 (x)
    gelu (erf)        3                    1                  1
    mish              5                    1                  1

It is built on `jax.custom_jvp`, not `custom_vjp`, so `jax.jacfwd`, `jax.jvp`, higher-order
derivatives, `vmap`, `jit` and sharded inputs all keep working. The tangent rule computes the
derivative as a *primal* value (a JVP of f with tangent ones, which does not depend on the
incoming tangent) and returns `derivative * tangent`. When JAX linearizes that rule for reverse
mode, everything that depends only on x lands in the forward program and the one tensor the
linear part needs, the derivative, becomes the only residual. (Pushing the incoming tangent
through `jax.jvp(f, x, t)` instead would keep every intermediate again.)

`derivative_dtype` (e.g. bfloat16) stores the derivative in lower precision, trading gradient
accuracy for residual bytes (`frugal bench memory` measures both). The up-cast happens inside a
`jax.checkpoint`, so the bfloat16 tensor, not an f32 copy of it, is what stays alive between
forward and backward.

The policy that applies these to whole models lives in `frugal.transforms.activation_policy`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Activation = Callable[[jax.Array], jax.Array]

__all__ = [
    "NestedActivation",
    "nested_forward_ad",
    "check_elementwise",
    "base_function",
    "function_name",
    "ACTIVATION_FACTORIES",
    "get_activation",
    "gelu",
    "gelu_tanh",
    "silu",
    "swish",
    "mish",
    "elu",
    "selu",
    "softplus",
    "hard_swish",
    "squareplus",
    "sigmoid",
    "tanh",
]


def _canonical_float_dtype(dtype: Any, argument: str) -> np.dtype | None:
    if dtype is None:
        return None
    try:
        canonical = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{argument}={dtype!r} is not a dtype; use e.g. jnp.bfloat16 or jnp.float32") from err
    if not jnp.issubdtype(canonical, jnp.floating):
        raise TypeError(f"{argument}={dtype!r} must be a floating dtype (bfloat16, float16, float32, float64)")
    return canonical


def function_name(f: Callable) -> str:
    """A readable name for a function, including a functools.partial's keywords."""
    if isinstance(f, functools.partial):
        keywords = ", ".join(f"{k}={v!r}" for k, v in f.keywords.items())
        return f"{function_name(f.func)}({keywords})" if keywords else function_name(f.func)
    return getattr(f, "__name__", type(f).__name__)


def check_elementwise(f: Activation, *, size: int = 12) -> None:
    """Raises ValueError unless `f` acts as one scalar function applied to every element.

    Three probes on a small float32 vector with distinct values: the output keeps the input's
    shape, the forward-mode Jacobian is diagonal (no element depends on another), and permuting
    the input permutes the output the same way (no position-dependent behaviour). `f` must also
    support forward-mode AD, since the nested derivative is a JVP (a `custom_vjp` function
    does not).
    """
    if not callable(f):
        raise TypeError(f"f={f!r} must be callable")
    probe = jnp.linspace(-3.7, 2.9, size, dtype=jnp.float32)
    name = function_name(f)
    try:
        out = jnp.asarray(f(probe))
    except Exception as err:  # report which function failed on a plain vector
        raise ValueError(
            f"f={name} failed on a float32 vector probe, so it cannot be checked as element-wise: {err}"
        ) from err
    if out.shape != probe.shape:
        raise ValueError(
            f"f={name} is not element-wise: a probe of shape {probe.shape} came back with shape {out.shape}"
        )
    try:
        jacobian = np.asarray(jax.jacfwd(f)(probe), dtype=np.float64)
    except TypeError as err:
        raise ValueError(
            f"f={name} does not support forward-mode AD ({err}); nested_forward_ad needs jax.jvp(f) "
            "(a jax.custom_vjp function cannot be used; define it with jax.custom_jvp)"
        ) from err
    off_diagonal = jacobian - np.diag(np.diag(jacobian))
    if np.any(off_diagonal != 0):
        i, j = np.unravel_index(np.argmax(np.abs(off_diagonal)), off_diagonal.shape)
        raise ValueError(
            f"f={name} is not element-wise: output element {i} depends on input element {j} "
            f"(d out[{i}] / d in[{j}] = {off_diagonal[i, j]:.3g}); nested forward-AD needs a diagonal Jacobian"
        )
    order = np.random.default_rng(0).permutation(size)
    permuted = np.asarray(f(probe[order]))
    if not np.allclose(permuted, np.asarray(out)[order], rtol=1e-6, atol=1e-6, equal_nan=True):
        raise ValueError(
            f"f={name} is not element-wise: its result depends on an element's position, not only on its value"
        )


_probe_elementwise = check_elementwise  # nested_forward_ad's flag of the same name shadows it


@dataclasses.dataclass(frozen=True)
class NestedActivation:
    """An element-wise activation whose backward pass uses a forward-computed derivative.

    Create it with `nested_forward_ad`. It is a hashable value (two wrappers of the same function
    with the same settings compare equal), so models holding it as a static attribute keep
    hitting the same jit cache.
    """

    function: Activation
    derivative_dtype: np.dtype | None = None
    derivative: Activation | None = None  # explicit f'(x); None = forward-mode AD of `function`
    name: str = ""

    def __post_init__(self):
        if not callable(self.function):
            raise TypeError(f"function={self.function!r} must be callable")
        if self.derivative is not None and not callable(self.derivative):
            raise TypeError(f"derivative={self.derivative!r} must be callable or None")
        object.__setattr__(self, "derivative_dtype", _canonical_float_dtype(self.derivative_dtype, "derivative_dtype"))
        if not self.name:
            object.__setattr__(self, "name", function_name(self.function))

    @functools.cached_property
    def _custom(self) -> Callable:
        function, derivative, derivative_dtype = self.function, self.derivative, self.derivative_dtype

        @jax.custom_jvp
        def activation(x):
            return function(x)

        @activation.defjvp
        def activation_jvp(primals, tangents):
            (x,), (x_dot,) = primals, tangents
            if derivative is None:
                # The unit tangent makes the derivative a primal value: it does not depend on
                # x_dot, so reverse mode keeps it as the single residual.
                y, slope = jax.jvp(function, (x,), (jnp.ones_like(x),))
            else:
                y, slope = function(x), derivative(x)
            if derivative_dtype is None or derivative_dtype == jnp.dtype(slope.dtype):
                return y, slope.astype(x_dot.dtype) * x_dot
            stored = slope.astype(derivative_dtype)
            # Up-cast inside a checkpoint: otherwise partial evaluation would hoist the cast into
            # the forward program and keep the full-precision copy as the residual.
            return y, jax.checkpoint(_scale_tangent)(stored, x_dot)

        return activation

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._custom(x)

    @property
    def __name__(self) -> str:  # so error messages and reports show the activation's name
        if self.derivative_dtype is not None:
            return f"nested[{self.derivative_dtype.name}]({self.name})"
        return f"nested({self.name})"


def _scale_tangent(slope: jax.Array, x_dot: jax.Array) -> jax.Array:
    return slope.astype(x_dot.dtype) * x_dot


def nested_forward_ad(
    f: Activation,
    *,
    derivative_dtype: Any = None,
    check_elementwise: bool = True,
    derivative: Activation | None = None,
    name: str = "",
) -> NestedActivation:
    """Wraps an element-wise `f` so reverse mode stores only f'(x), computed by forward-mode AD.

    Args:
      f: an element-wise function of one array (jax.nn.gelu, a lambda built from jnp ops, ...).
      derivative_dtype: store f'(x) in this dtype (e.g. jnp.bfloat16) to halve its memory; None
        keeps the input's dtype. The multiply in the backward pass still runs in the tangent's dtype.
      check_elementwise: probe `f` once (see `check_elementwise`) and raise ValueError if its
        Jacobian is not diagonal or it is position-dependent; pass False for functions you know
        are element-wise or that only accept particular shapes.
      derivative: optional closed-form f'(x) used instead of the JVP, for functions whose
        forward-mode derivative hits 0 * inf at infinities (e.g. hard_swish).
      name: shown in reports; defaults to f.__name__.

    Returns:
      A callable `NestedActivation` with f's values whose reverse-mode residual is f'(x) only.
    """
    if isinstance(f, NestedActivation):  # re-wrapping keeps a closed-form derivative and the name
        derivative = f.derivative if derivative is None else derivative
        name = name or f.name
        f = f.function
    if check_elementwise:
        _probe_elementwise(f)
    return NestedActivation(f, derivative_dtype=derivative_dtype, derivative=derivative, name=name)


def base_function(activation: Activation) -> Activation:
    """The plain element-wise function under any memory wrapper (nested or recomputed)."""
    while True:
        inner = getattr(activation, "function", None)
        if inner is None or not callable(inner):
            return activation
        activation = inner


# ----- ready activations -----------------------------------------------------------------------
# Each factory returns a NestedActivation whose values are exactly jax.nn's and whose gradients
# equal jax.grad of jax.nn's function (<= 1e-6 in float32), including 0, large |x|, +-inf and NaN.


# Module-level partials, so that equal settings give equal (hashable) NestedActivations.
_GELU_ERF = functools.partial(jax.nn.gelu, approximate=False)
_GELU_TANH = functools.partial(jax.nn.gelu, approximate=True)


def gelu(*, approximate: bool = False, derivative_dtype: Any = None) -> NestedActivation:
    """GELU, x * Phi(x); approximate=True is the tanh form used by GPT-2 and BERT's reference code."""
    fn = _GELU_TANH if approximate else _GELU_ERF
    return NestedActivation(fn, derivative_dtype, name="gelu_tanh" if approximate else "gelu")


def gelu_tanh(*, derivative_dtype: Any = None) -> NestedActivation:
    return gelu(approximate=True, derivative_dtype=derivative_dtype)


def _swish(x, beta):
    return x * jax.nn.sigmoid(beta * x)


def silu(*, beta: float = 1.0, derivative_dtype: Any = None) -> NestedActivation:
    """Swish x * sigmoid(beta * x); beta=1 is SiLU (jax.nn.silu exactly)."""
    if not np.isfinite(beta):
        raise ValueError(f"beta={beta!r} must be a finite number")
    if beta == 1.0:
        return NestedActivation(jax.nn.silu, derivative_dtype, name="silu")
    return NestedActivation(functools.partial(_swish, beta=float(beta)), derivative_dtype, name=f"swish(beta={beta:g})")


swish = silu


def mish(*, derivative_dtype: Any = None) -> NestedActivation:
    """Mish, x * tanh(softplus(x)) (Misra 2019)."""
    return NestedActivation(jax.nn.mish, derivative_dtype, name="mish")


def elu(*, alpha: float = 1.0, derivative_dtype: Any = None) -> NestedActivation:
    if not np.isfinite(alpha):
        raise ValueError(f"alpha={alpha!r} must be a finite number")
    return NestedActivation(functools.partial(jax.nn.elu, alpha=float(alpha)), derivative_dtype, name="elu")


def selu(*, derivative_dtype: Any = None) -> NestedActivation:
    return NestedActivation(jax.nn.selu, derivative_dtype, name="selu")


def softplus(*, derivative_dtype: Any = None) -> NestedActivation:
    return NestedActivation(jax.nn.softplus, derivative_dtype, name="softplus")


def _hard_swish_derivative(x):
    # jax.nn.hard_swish is x * relu6(x + 3) / 6; its JVP multiplies x by relu6's zero slope and
    # gives 0 * inf = NaN at +-inf, where reverse mode gives 1 and 0. The closed form, with
    # jax's boundary convention (relu6' = 0 at 0 and 6), avoids that product.
    middle = (2.0 * x + 3.0) / 6.0
    return jnp.where(x >= 3.0, jnp.ones_like(x), jnp.where(x <= -3.0, jnp.zeros_like(x), middle))


def hard_swish(*, derivative_dtype: Any = None) -> NestedActivation:
    """Hard swish x * relu6(x + 3) / 6 (MobileNetV3); derivative in closed form (see above)."""
    return NestedActivation(jax.nn.hard_swish, derivative_dtype, derivative=_hard_swish_derivative, name="hard_swish")


def squareplus(*, b: float = 4.0, derivative_dtype: Any = None) -> NestedActivation:
    """(x + sqrt(x^2 + b)) / 2, a smooth ReLU without exponentials."""
    if not (np.isfinite(b) and b >= 0):
        raise ValueError(f"b={b!r} must be a finite number >= 0")
    return NestedActivation(functools.partial(jax.nn.squareplus, b=float(b)), derivative_dtype, name="squareplus")


def sigmoid(*, derivative_dtype: Any = None) -> NestedActivation:
    return NestedActivation(jax.nn.sigmoid, derivative_dtype, name="sigmoid")


def tanh(*, derivative_dtype: Any = None) -> NestedActivation:
    return NestedActivation(jnp.tanh, derivative_dtype, name="tanh")


ACTIVATION_FACTORIES: dict[str, Callable[..., NestedActivation]] = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "silu": silu,
    "swish": swish,
    "mish": mish,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
    "hard_swish": hard_swish,
    "squareplus": squareplus,
    "sigmoid": sigmoid,
    "tanh": tanh,
}


def get_activation(name: str, **kwargs) -> NestedActivation:
    """A ready nested activation by name (see ACTIVATION_FACTORIES), e.g. get_activation("mish")."""
    if name not in ACTIVATION_FACTORIES:
        raise ValueError(f"activation name={name!r} is not known; use one of {sorted(ACTIVATION_FACTORIES)}")
    return ACTIVATION_FACTORIES[name](**kwargs)
