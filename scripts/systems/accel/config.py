"""Settings of the accelerator experiments: the ANT table, SALO, and the design sweep.

`AccelConfig` bundles the three for the tour; `frugal accel ant|salo|sweep` each take their own part
(flags derived from these fields by `frugal.scripts.configs`).
"""

from __future__ import annotations

import dataclasses

from frugal.accel import paper_workloads, salo, sweep
from frugal.scripts.configs import check_presets, knob


@dataclasses.dataclass(frozen=True)
class AntConfig:
    """The ANT table: ANT-OS against BitFusion, OLAccel, AdaFloat and BiScaled (arXiv 2208.14286)."""

    models: tuple[str, ...] = knob(paper_workloads.MODELS, "workloads", choices=paper_workloads.MODELS)
    batch: int = knob(64, "batch size (ANT's set-up: 64)")
    trace_resnets: bool = knob(
        True, "take ResNet-18/50 from a trace of frugal.models.resnet (off: the hand-written layer lists)"
    )
    outdir: str = knob("reports/accel", "where ant.{json,md,png} go")

    def __post_init__(self):
        unknown = set(self.models) - set(paper_workloads.MODELS)
        if unknown or not self.models:
            raise ValueError(f"models={self.models!r}: choose from {paper_workloads.MODELS}")
        if self.batch < 1:
            raise ValueError(f"batch={self.batch} must be >= 1")


@dataclasses.dataclass(frozen=True)
class SaloConfig:
    """SALO (arXiv 2206.14550): cycles against the reference model, CPU/GPU baselines, fixed point."""

    cpu_workloads: tuple[str, ...] = knob(
        ("vil_stage2", "vil_stage1", "longformer"),
        "workloads timed on this CPU (no value: skip the CPU baseline)",
        choices=sorted(salo.SALO_WORKLOADS),
        allow_empty=True,
    )
    cpu_repeats: int = knob(3, "timed CPU runs per workload (median)", flag="repeats")
    gpus: tuple[str, ...] = knob(("V100", "A100", "H200"), "GPUs for the roofline baseline", choices=sorted(salo.GPUS))
    fixed_point_seq: int = knob(256, "sequence length of the fixed-point check")
    fixed_point_heads: int = knob(4, "heads of the fixed-point check")
    fixed_point_head_dim: int = knob(32, "head size of the fixed-point check")
    fixed_point_window: int = knob(33, "window of the fixed-point check")
    seed: int = knob(0, "random seed of the fixed-point inputs")
    outdir: str = knob("reports/accel", "where salo.{json,md} go")

    def __post_init__(self):
        unknown = set(self.cpu_workloads) - set(salo.SALO_WORKLOADS)
        if unknown:
            raise ValueError(f"cpu_workloads has unknown names {sorted(unknown)}; use {sorted(salo.SALO_WORKLOADS)}")
        unknown = set(self.gpus) - set(salo.GPUS)
        if unknown:
            raise ValueError(f"gpus has unknown names {sorted(unknown)}; use {sorted(salo.GPUS)}")
        if self.cpu_repeats < 1:
            raise ValueError(f"cpu_repeats={self.cpu_repeats} must be >= 1")
        if self.fixed_point_seq < 2 or self.fixed_point_window < 1 or self.fixed_point_heads < 1:
            raise ValueError("fixed_point_seq must be >= 2, fixed_point_window and fixed_point_heads >= 1")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Sweep axes, benchmark size and design-search settings (workload: ResNet-18 at batch `batch`)."""

    rows: tuple[int, ...] = knob((8, 16, 32, 64, 128), "array heights")
    cols: tuple[int, ...] = knob((8, 16, 32, 64, 128), "array widths")
    buffer_kib: tuple[int, ...] = knob((32, 64, 128, 256), "weight/output buffer KiB (activation buffer: twice)")
    bits: tuple[int, ...] = knob((2, 4, 8), "operand bit widths")
    batch: int = knob(1, "ResNet-18 batch size")
    benchmark_points: int = knob(200_000, "design points in the speed benchmark")
    search: sweep.SearchConfig = sweep.SearchConfig()
    outdir: str = knob("reports/accel", "where sweep.{json,md,png} go")

    def __post_init__(self):
        for name in ("rows", "cols", "buffer_kib", "bits"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{name}={values!r}: give one or more values, each >= 1")
        if self.batch < 1:
            raise ValueError(f"batch={self.batch} must be >= 1")
        if self.benchmark_points < 1:
            raise ValueError(f"benchmark_points={self.benchmark_points} must be >= 1")


@dataclasses.dataclass(frozen=True)
class AccelConfig:
    """The three accelerator experiments, as the tour runs them."""

    ant: AntConfig = AntConfig()
    salo: SaloConfig = SaloConfig()
    sweep: SweepConfig = SweepConfig()


_SMALL_GRID = dict(rows=(8, 16, 32, 64), cols=(8, 16, 32, 64))
PRESETS = check_presets(
    AccelConfig,
    {
        "quick": AccelConfig(
            ant=AntConfig(models=("resnet18", "bert_sst2"), trace_resnets=False),
            salo=SaloConfig(cpu_workloads=(), cpu_repeats=1, gpus=("A100",), fixed_point_seq=32),
            sweep=SweepConfig(
                rows=(8, 16),
                cols=(8, 16),
                buffer_kib=(32, 64),
                bits=(4, 8),
                benchmark_points=2_000,
                search=sweep.SearchConfig(steps=5),
            ),
        ),
        "tour": AccelConfig(
            salo=SaloConfig(cpu_workloads=("vil_stage2",), cpu_repeats=1, fixed_point_seq=64),
            sweep=SweepConfig(**_SMALL_GRID, benchmark_points=50_000, search=sweep.SearchConfig(steps=20)),
        ),
        "full": AccelConfig(),
    },
)
ANT_PRESETS = {name: preset.ant for name, preset in PRESETS.items()}
SALO_PRESETS = {name: preset.salo for name, preset in PRESETS.items()}
SWEEP_PRESETS = {name: preset.sweep for name, preset in PRESETS.items()}
