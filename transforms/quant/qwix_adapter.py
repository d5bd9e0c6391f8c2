"""The one place frugal touches qwix internals (github.com/google/qwix).

qwix's public API lets a `QuantizationProvider` intercept `dot_general` / `conv_general_dilated` /
`einsum` inside a Flax model (`qwix.quantize_model`), which is what `model_quant` builds on. Three
things an ANT provider needs have no public form in qwix 0.1.8: the rule and op id of the op being
intercepted (`QuantizationProvider._get_current_rule_and_op_id`), the module path of the call, and
creating/finding parameters and reading variables from inside an intercepted op (`qwix._src.utils.flax_util`). They are
wrapped here so that a qwix upgrade changes this file only; `pyproject.toml` pins `qwix==0.1.8` for
this reason, and tests/test_quant_model.py exercises every function below through the provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qwix._src.utils import flax_util  # private: pinned qwix==0.1.8


def current_rule_and_op_id(provider, op_name: str) -> tuple[Any, str]:
    """The matching rule (or None) and qwix's op id ('dot_general0', ...) of the op being intercepted."""
    return provider._get_current_rule_and_op_id(op_name)


def current_module_path() -> str:
    """The '/'-joined path of the Flax module whose call is being intercepted."""
    return "/".join(map(str, flax_util.get_current_module_path()))


def get_or_create_param(name: str, init: Callable[[], Any], param_type: type) -> Any:
    """A parameter of the current module, created with `init()` on first use (typed `param_type`)."""
    return flax_util.get_or_create_param(name, init, nnx_param_type=param_type)


def current_module_variable(name: str) -> Any:
    """The value of variable `name` of the module being intercepted, or None when it has none."""
    variable = getattr(flax_util.get_current_module(), name, None)
    return None if variable is None else flax_util.unbox(variable)


def find_param(value) -> Any:
    """The parameter `value` was read from, or None when it is an activation."""
    return flax_util.find_param(value)
