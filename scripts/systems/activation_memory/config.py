"""Settings of `frugal bench memory` (flags derived from these fields by `frugal.scripts.configs`)."""

from __future__ import annotations

import dataclasses

from frugal.scripts.configs import check_presets, knob
from frugal.transforms.activation_policy import POLICIES, REGIMES

MODELS = ("bert", "mobilenet_silu", "mish_cnn", "gelu_mlp")


@dataclasses.dataclass(frozen=True)
class ActivationMemoryConfig:
    """Which models, policies and execution regimes to measure, and how often to time them."""

    models: tuple[str, ...] = knob(MODELS, "models to measure", choices=MODELS)
    policies: tuple[str, ...] = knob(POLICIES, "activation policies (autodiff is always needed)", choices=POLICIES)
    regimes: tuple[str, ...] = knob(REGIMES, "execution regimes", choices=REGIMES)
    small: bool = knob(False, "smaller widths and batches, same structure (about a minute of CPU time)")
    repeats: int = knob(3, "timed runs per configuration, interleaved across policies (fastest reported)")
    seed: int = knob(0, "random seed of the weights and the batch")
    reference_check: bool = knob(
        True, "also compile the 6-layer 2048-row GELU-tanh MLP (memory only; skipped with --small)", flag="reference"
    )
    outdir: str = knob("reports/memory", "where memory.{json,md,png} go")

    def __post_init__(self):
        for field, allowed in (("models", MODELS), ("policies", POLICIES), ("regimes", REGIMES)):
            values = getattr(self, field)
            if not values or any(v not in allowed for v in values):
                raise ValueError(f"{field}={list(values)} must be a non-empty subset of {list(allowed)}")
        if "autodiff" not in self.policies:
            raise ValueError(
                f"policies={list(self.policies)} must include 'autodiff' (every ratio is taken against it)"
            )
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats} must be >= 1")


PRESETS = check_presets(
    ActivationMemoryConfig,
    {
        # the tests' size: the small MLP, split and eager regimes, one timed run
        "quick": ActivationMemoryConfig(
            models=("gelu_mlp",),
            policies=("autodiff", "nested", "recompute", "auto"),
            regimes=("split", "eager"),
            small=True,
            repeats=1,
            reference_check=False,
        ),
        # the tour's section: the small MLP in the jit and split regimes
        "tour": ActivationMemoryConfig(
            models=("gelu_mlp",), regimes=("jit", "split"), small=True, repeats=2, reference_check=False
        ),
        # the full benchmark: four models at full size, three regimes, the reference MLP
        "full": ActivationMemoryConfig(),
    },
)
