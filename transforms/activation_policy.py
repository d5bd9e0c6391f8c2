"""The activation memory policy: choose, per model, what reverse mode keeps for each activation.

`activation_memory(model, policy)` returns a copy of a Flax NNX model whose every `activation`
attribute (the convention in `frugal.models.layers`) is replaced; model code never changes.

Policies:
  autodiff     plain reverse mode: keeps every intermediate of a composite activation.
  nested       nested forward-AD (`frugal.transforms.activations`): keeps f'(x) only.
  recompute    `jax.checkpoint` around the activation: keeps its input x, re-runs f and f's
               VJP in the backward pass.
  nested_lowp  nested, with f'(x) stored in `derivative_dtype` (bfloat16 by default).
  auto         the measured choice for the execution regime and, where it matters (split),
               for each activation (below).

Regimes (where the forward and backward pass of a training step meet):
  jit     one jitted train step (forward + backward in one XLA program).
  split   separate forward and backward programs with the VJP residuals passed between them
          (pipeline stages, micro-batching, a forward/backward split across jit boundaries).
  eager   op-by-op execution without jit.

What `auto` picks, and why (the measurements behind each rule, with their machines, are in the
activation-memory system's README, `frugal bench memory`):
  jit    -> recompute. Inside one XLA program the compiler fuses the element-wise chain and
           re-materializes it anyway, so nested never lowers compiled temp memory (the custom_jvp
           makes f'(x) a materialized tensor), while checkpointing the activation does (1.3-2.7x on
           our four benchmark models), at a step time within noise of autodiff.
  split  -> per activation. Nested and recompute keep the same bytes when forward and backward
           are separate programs (one tensor per activation, below autodiff), so the choice is
           about time: nested computes f'(x) once in the forward pass, recompute re-runs f and its
           VJP in the backward pass. Nested pays off when the derivative is costly to redo (Mish,
           as the paper reports), recompute when XLA folds a cheap derivative into the fused
           backward loop (GELU-erf). The proxy for "costly" is the number of tensors plain autodiff
           saves for the activation, counted once per function on a small float32 probe
           (`saved_residuals`, public API only; the argument and scalar constants left out):

               saved residuals   activations (jax.nn)                                 auto picks
               >= 4              gelu_tanh 4, mish 4, elu 4, selu 4, hard_tanh 4      nested
               <= 3              gelu (erf) 3, hard_swish 3, silu 2, softplus 2,      recompute
                                 squareplus 2, tanh 2, relu 2, sigmoid 1

           An activation the probe cannot trace falls back to nested.
  eager  -> recompute, for every activation. Op-by-op, both keep one live tensor per activation;
           recompute was never slower than nested beyond noise.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from frugal.transforms.activations import NestedActivation, base_function, check_elementwise, function_name

POLICIES = ("autodiff", "nested", "recompute", "nested_lowp", "auto")
REGIMES = ("jit", "split", "eager")

# The measured decision for `auto` (see the module docstring for the numbers behind it).
# "per_activation": nested when plain autodiff saves >= NESTED_MIN_RESIDUALS tensors for the
# activation (its derivative is costly to recompute), recompute otherwise.
PER_ACTIVATION = "per_activation"
AUTO_CHOICE = {"jit": "recompute", "split": PER_ACTIVATION, "eager": "recompute"}
NESTED_MIN_RESIDUALS = 4
_PROBE_SIZE = 8


def saved_residuals(function: Callable, *args) -> list[tuple[Any, str]]:
    """What reverse mode saves between `function`'s forward and backward pass, for these arguments.

    Returns one `(aval, source)` per saved array, `source` being "argument" (an input kept as it
    is), "constant" (a value closed over by `function`) or "computed" (made by the forward pass:
    the activation memory a policy controls). Built from public API only: the pullback returned by
    `jax.vjp` is a pytree of exactly the saved arrays, and `jax.make_jaxpr` of it tells where each
    comes from.
    """
    from jax.extend.core import Literal

    closed = jax.make_jaxpr(lambda *a: jax.vjp(function, *a)[1])(*args)
    arguments, constants = set(closed.jaxpr.invars), set(closed.jaxpr.constvars)
    found = []
    for var in closed.jaxpr.outvars:
        if isinstance(var, Literal):
            continue
        source = "argument" if var in arguments else "constant" if var in constants else "computed"
        found.append((var.aval, source))
    return found


def _count_autodiff_residuals(function: Callable) -> int:
    probe = jnp.linspace(-3.0, 3.0, _PROBE_SIZE, dtype=jnp.float32)
    # Scalar constants (literals, alpha) cost nothing per element; the argument lives anyway.
    return sum(1 for aval, source in saved_residuals(function, probe) if aval.shape and source != "argument")


@functools.lru_cache(maxsize=256)
def _cached_residual_count(function: Callable) -> int:
    return _count_autodiff_residuals(function)


def autodiff_residual_count(activation: Callable) -> int:
    """How many per-element tensors plain reverse mode saves for `activation` (any wrapper removed).

    Counted once per function on a float32 probe of 8 elements and cached; the argument itself and
    scalar constants are not counted (gelu-erf: 3, gelu-tanh: 4, mish: 4, silu: 2, relu: 2).
    """
    plain = base_function(activation)
    try:
        return _cached_residual_count(plain)
    except TypeError as err:
        if "unhashable" not in str(err):
            raise
        return _count_autodiff_residuals(plain)  # an unhashable callable: count without caching


def auto_choice(activation: Callable, regime: str) -> str:
    """The concrete policy `auto` uses for `activation` in `regime` (see the module docstring)."""
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r} is not known; use one of {list(REGIMES)}")
    choice = AUTO_CHOICE[regime]
    if choice != PER_ACTIVATION:
        return choice
    try:
        count = autodiff_residual_count(activation)
    except Exception:  # a function the probe cannot trace: keep the one-tensor nested default
        return "nested"
    return "nested" if count >= NESTED_MIN_RESIDUALS else "recompute"


@dataclasses.dataclass(frozen=True)
class RecomputedActivation:
    """An activation wrapped in `jax.checkpoint`: reverse mode keeps its input and recomputes."""

    function: Callable[[jax.Array], jax.Array]

    def __post_init__(self):
        if not callable(self.function):
            raise TypeError(f"function={self.function!r} must be callable")

    @functools.cached_property
    def _checkpointed(self):
        return jax.checkpoint(self.function)

    def __call__(self, x):
        return self._checkpointed(x)

    @property
    def __name__(self) -> str:
        return f"recompute({function_name(self.function)})"


@dataclasses.dataclass(frozen=True)
class ActivationPolicy:
    """What to keep for every activation of a model, in which regime.

    policy: one of POLICIES; regime: one of REGIMES (only `auto` reads it; `resolve` gives the
      concrete policy per activation);
    derivative_dtype: the storage dtype of f'(x) for `nested_lowp`;
    check_elementwise: refuse (ValueError) a model whose activation is not element-wise.
    """

    policy: str = "auto"
    regime: str = "jit"
    derivative_dtype: Any = jnp.bfloat16
    check_elementwise: bool = True

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r} is not known; use one of {list(POLICIES)}")
        if self.regime not in REGIMES:
            raise ValueError(f"regime={self.regime!r} is not known; use one of {list(REGIMES)}")
        try:
            dtype = jnp.dtype(self.derivative_dtype)
        except TypeError as err:
            raise TypeError(f"derivative_dtype={self.derivative_dtype!r} is not a dtype") from err
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"derivative_dtype={self.derivative_dtype!r} must be a floating dtype")

    def resolve(self, activation: Callable | None = None) -> str:
        """The concrete policy for `activation`: `auto` replaced by the measured choice.

        In a regime whose choice depends on the activation (split), `activation` is required.
        """
        if self.policy != "auto":
            return self.policy
        if AUTO_CHOICE[self.regime] != PER_ACTIVATION:
            return AUTO_CHOICE[self.regime]
        if activation is None:
            raise ValueError(f"policy='auto' in regime={self.regime!r} decides per activation; pass the activation")
        return auto_choice(activation, self.regime)


def wrap_activation(activation: Callable, policy: ActivationPolicy | str = "auto") -> Callable:
    """Returns `activation` (with any earlier wrapper removed) under `policy`.

    `auto` is resolved here, for this activation (`ActivationPolicy.resolve`).
    """
    policy = policy if isinstance(policy, ActivationPolicy) else ActivationPolicy(policy)
    plain = base_function(activation)
    if isinstance(activation, NestedActivation) and activation.derivative is not None:
        # Keep a closed-form derivative (hard_swish) when re-wrapping a nested activation.
        derivative = activation.derivative
    else:
        derivative = None
    if policy.check_elementwise:
        check_elementwise(plain)
    choice = policy.resolve(plain)
    if choice == "autodiff":
        return plain
    if choice == "recompute":
        return RecomputedActivation(plain)
    dtype = policy.derivative_dtype if choice == "nested_lowp" else None
    name = activation.name if isinstance(activation, NestedActivation) else ""
    return NestedActivation(plain, derivative_dtype=dtype, derivative=derivative, name=name)


def activation_memory(
    model: nnx.Module,
    policy: ActivationPolicy | str = "auto",
    *,
    regime: str | None = None,
    derivative_dtype: Any = None,
) -> nnx.Module:
    """A copy of `model` with every `activation` attribute wrapped by `policy`; `model` is unchanged.

    Args:
      model: a Flax NNX module following the `self.activation` convention (ResNets in
        frugal.models.resnet, frugal.models.bench_nets, transformer MLPs).
      policy: a name from POLICIES or an ActivationPolicy.
      regime: for a policy name, the execution regime `auto` decides for (default "jit").
      derivative_dtype: for a policy name, the `nested_lowp` storage dtype (default bfloat16).

    Raises ValueError when the model has no `activation` attribute at all (nothing would change,
    which is almost certainly a mistake) or an activation is not element-wise.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if isinstance(policy, ActivationPolicy):
        if regime is not None or derivative_dtype is not None:
            raise ValueError("pass regime/derivative_dtype inside the ActivationPolicy, not as well as it")
    else:
        kwargs = {"policy": policy}
        if regime is not None:
            kwargs["regime"] = regime
        if derivative_dtype is not None:
            kwargs["derivative_dtype"] = derivative_dtype
        policy = ActivationPolicy(**kwargs)
    copy = nnx.clone(model)
    wrapped: dict[int, Callable] = {}  # one wrapper per distinct function, shared like the original
    found = 0
    for _, module in nnx.iter_modules(copy):
        current = vars(module).get("activation")
        if current is None or not callable(current):
            continue
        found += 1
        if id(current) not in wrapped:
            wrapped[id(current)] = wrap_activation(current, policy)
        module.activation = wrapped[id(current)]
    if not found:
        raise ValueError(
            f"model {type(model).__name__} has no module with an `activation` attribute; "
            "activation_memory relies on the convention in frugal.models.layers"
        )
    return copy


def activation_summary(model: nnx.Module) -> dict[str, int]:
    """How many modules hold each activation (by name), e.g. {'nested(gelu)': 12}."""
    counts: dict[str, int] = {}
    for _, module in nnx.iter_modules(model):
        current = vars(module).get("activation")
        if current is not None and callable(current):
            name = function_name(current)
            counts[name] = counts.get(name, 0) + 1
    return counts
