"""JAX-traced accelerator cost model: function -> workload -> cycles, energy, area.

- `trace_workload(fn, *args)` turns any JAX function (Flax NNX models included) into a Workload
  of GEMMs/convolutions with shapes and bit widths (frugal.accel.workload);
- `gemm_compute_cycles(m, n, k, rows=, cols=, dataflow=)` counts systolic-array cycles exactly as
  SCALE-Sim does (frugal.accel.systolic); precision-scalable arrays follow BitFusion;
- `Design` is a pytree design point (frugal.accel.designs) with the ANT paper's designs as presets;
  `evaluate` gives cycles, stalls, energy (static/DRAM/buffer/core) and area (frugal.accel.cost);
- `frugal.accel.salo`: the SALO cycle model, energy, GPU roofline and a bit-accurate fixed-point mode;
- `frugal.accel.sweep`: vmap sweeps, Pareto fronts and gradient-based design search.

Depends only on JAX (and numpy/optax); nothing here imports the models or transforms packages.
"""

from frugal.accel.cost import design_area_mm2, evaluate, evaluate_batch, evaluate_jit, layer_costs, pad_layers
from frugal.accel.designs import (
    PAPER_DESIGNS,
    Design,
    adafloat_design,
    ant_design,
    biscaled_design,
    bitfusion_design,
    make_design,
    olaccel_design,
    stack_designs,
)
from frugal.accel.energy import EnergyTable, pe_energy_table
from frugal.accel.paper_workloads import paper_bits, paper_workload
from frugal.accel.salo import (
    SaloArray,
    SaloWorkload,
    gpu_roofline_seconds,
    hybrid_attention_float,
    salo_attention_fixed_point,
    salo_cycles,
    salo_report,
)
from frugal.accel.sweep import SearchConfig, grad_design_search, pareto_mask, sweep_points, throughput_benchmark
from frugal.accel.systolic import (
    compute_utilization,
    gemm_compute_cycles,
    gemm_folds,
    mapping_efficiency,
    precision_factor,
    scaled_gemm_cycles,
)
from frugal.accel.workload import (
    AttentionOp,
    GemmOp,
    Workload,
    bits_from_plan,
    conv_layer,
    linear_layer,
    trace_workload,
)

__all__ = [
    "AttentionOp",
    "bits_from_plan",
    "Design",
    "EnergyTable",
    "GemmOp",
    "PAPER_DESIGNS",
    "SaloArray",
    "SaloWorkload",
    "SearchConfig",
    "Workload",
    "adafloat_design",
    "ant_design",
    "biscaled_design",
    "bitfusion_design",
    "compute_utilization",
    "conv_layer",
    "design_area_mm2",
    "evaluate",
    "evaluate_batch",
    "evaluate_jit",
    "gemm_compute_cycles",
    "gemm_folds",
    "gpu_roofline_seconds",
    "grad_design_search",
    "hybrid_attention_float",
    "layer_costs",
    "linear_layer",
    "make_design",
    "mapping_efficiency",
    "olaccel_design",
    "pad_layers",
    "paper_bits",
    "paper_workload",
    "pareto_mask",
    "pe_energy_table",
    "precision_factor",
    "salo_attention_fixed_point",
    "salo_cycles",
    "salo_report",
    "scaled_gemm_cycles",
    "stack_designs",
    "sweep_points",
    "throughput_benchmark",
    "trace_workload",
]
