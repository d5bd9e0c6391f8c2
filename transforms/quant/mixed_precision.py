"""ANT's 4/8-bit mixed precision ("ANT4-8") as a plan over calibration samples.

The reference keeps every layer at 4 bits with adaptive types except a few at 8-bit **int**:
the first and last layers for CNNs (ResNet-18: conv1 and fc), and for BERT the last two layers
plus a budget of further layers with the largest quantization error (weight MSE + input MSE)
(`set_8_bit_layer_n`). `MixedPrecisionPolicy` expresses both: how many leading and trailing
layers (in call order) go to high precision, and how many more are ranked by their low-bit MSE.
User rules in `overrides` are consulted first, so any choice of the policy can be overridden.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from frugal.transforms.quant.model_quant import (
    LayerSamples,
    QuantPlan,
    QuantRule,
    SelectionCache,
    first_matching_rule,
    select_plan,
)

ANT_KINDS = ("int", "pot", "flint", "float")


@dataclasses.dataclass(frozen=True)
class MixedPrecisionPolicy:
    """Which layers get `high_bits` (int), the rest `low_bits` with adaptive types.

    Attributes:
      low_bits, low_kinds: the default width and the candidate types for every other layer.
      high_bits, high_kinds: the width and types of the promoted layers (8-bit int in ANT).
      first_layers, last_layers: how many leading/trailing quantized layers (call order) to promote.
      extra_high_layers: a budget of further layers, promoted in order of largest low-bit MSE.
      overrides: QuantRules consulted before the policy (first match wins) for any layer.
      alpha_range, alpha_step: the clip sweep, shared by every rule the policy emits.
    """

    low_bits: int = 4
    low_kinds: tuple = ANT_KINDS
    high_bits: int = 8
    high_kinds: tuple = ("int",)
    first_layers: int = 1
    last_layers: int = 1
    extra_high_layers: int = 0
    overrides: tuple = ()
    alpha_range: tuple = (0.75, 1.5)
    alpha_step: float = 0.01

    def __post_init__(self):
        for name in ("first_layers", "last_layers", "extra_high_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be an int >= 0")
        object.__setattr__(self, "overrides", tuple(self.overrides))
        if not all(isinstance(r, QuantRule) for r in self.overrides):
            raise TypeError("overrides must be QuantRule instances")
        # Building the rules validates bits and kinds with the same messages as QuantRule.
        self.low_rule()
        self._rule(".*", (), self.high_bits, self.high_kinds)

    def _rule(self, path: str, op_names, bits: int, kinds) -> QuantRule:
        return QuantRule(
            module_path=path,
            op_names=tuple(op_names),
            weight_bits=bits,
            act_bits=bits,
            weight_kinds=kinds,
            act_kinds=kinds,
            alpha_range=self.alpha_range,
            alpha_step=self.alpha_step,
        )

    def low_rule(self) -> QuantRule:
        return self._rule(".*", (), self.low_bits, self.low_kinds)

    def high_rule(self, sample: LayerSamples) -> QuantRule:
        return self._rule(re.escape(sample.path), (sample.op_name,), self.high_bits, self.high_kinds)


@dataclasses.dataclass(frozen=True)
class MixedPrecisionResult:
    plan: QuantPlan
    high_precision: tuple[str, ...]  # layer keys promoted by the policy (overrides not counted)
    ranked_by_mse: tuple[tuple[str, float], ...]  # every candidate layer's low-bit MSE, largest first


def mixed_precision_plan(
    samples: Sequence[LayerSamples],
    policy: MixedPrecisionPolicy = MixedPrecisionPolicy(),
    *,
    cache: SelectionCache | None = None,
    max_activation_values: int = 1 << 16,
) -> MixedPrecisionResult:
    """Applies the policy to calibration samples (from `collect_layer_inputs`) and selects types.

    Layers matched by an override rule are left to that rule and neither count toward nor get
    promoted by the policy.
    """
    if not samples:
        raise ValueError("samples is empty; run collect_layer_inputs first")
    cache = cache or SelectionCache()
    overrides = list(policy.overrides)
    free = [s for s in samples if first_matching_rule(overrides, s.path, s.op_name) is None]
    low_plan = (
        select_plan(free, [policy.low_rule()], cache=cache, max_activation_values=max_activation_values)
        if free
        else QuantPlan(())
    )
    low_mse = {layer.key: layer.mse for layer in low_plan.layers}

    promoted: list[str] = []
    keys = [s.key for s in free]
    for key in keys[: policy.first_layers] + (keys[-policy.last_layers :] if policy.last_layers else []):
        if key not in promoted:
            promoted.append(key)
    ranked = sorted(((k, low_mse[k]) for k in keys if k in low_mse), key=lambda kv: -kv[1])
    budget = policy.extra_high_layers
    for key, _ in ranked:
        if budget == 0:
            break
        if key not in promoted:
            promoted.append(key)
            budget -= 1

    by_key = {s.key: s for s in free}
    rules = overrides + [policy.high_rule(by_key[k]) for k in promoted] + [policy.low_rule()]
    plan = select_plan(samples, rules, cache=cache, max_activation_values=max_activation_values)
    return MixedPrecisionResult(plan, tuple(promoted), tuple(ranked))
