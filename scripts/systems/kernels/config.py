"""Settings of `frugal check-device` (flags derived from these fields by `frugal.scripts.configs`)."""

from __future__ import annotations

import dataclasses

from frugal.scripts.configs import check_presets, knob

KERNELS = ("ant_matmul", "hybrid_attention", "csr_matmul")


@dataclasses.dataclass(frozen=True)
class KernelCheckConfig:
    """Which kernels, at which sizes, how often timed."""

    kernels: tuple[str, ...] = knob(KERNELS, "kernels to check", choices=KERNELS)
    matmul_shapes: tuple[str, ...] = knob(
        ("128x1536x384", "2048x4096x4096", "8192x1536x6144"),
        "ANT matmul M x K x N (MiniLM FFN, a large square, BERT-large FFN)",
    )
    attention_lengths: tuple[int, ...] = knob(
        (4096, 16384), "hybrid attention sequence lengths (12 heads of 64, window 512)"
    )
    attention_window: int = knob(512, "attention window (Longformer-base: 512)")
    attention_blocks: tuple[int, ...] = knob((64, 128), "Pallas attention block sizes timed (powers of two >= 16)")
    attention_patterns: bool = knob(True, "also check small attention patterns (dilation, globals, padding, causal)")
    csr_nodes: int = knob(100_000, "CSR product: rows (graph nodes)")
    csr_degree: int = knob(16, "CSR product: stored entries per row")
    csr_width: int = knob(64, "CSR product: dense width")
    dtypes: tuple[str, ...] = knob(("float32", "bfloat16"), "input dtypes of the attention and CSR checks")
    repeats: int = knob(10, "timed calls per kernel and path (the median is reported)")
    interpret: bool = knob(
        False, "run the kernels in Pallas interpret mode on whatever backend this is (a dry run of the plumbing)"
    )
    seed: int = knob(0, "random seed of the inputs")
    outdir: str = knob("reports/device", "where check_device.{json,md} go")

    def __post_init__(self):
        unknown = set(self.kernels) - set(KERNELS)
        if unknown or not self.kernels:
            raise ValueError(f"kernels={self.kernels!r}: choose from {KERNELS}")
        for shape in self.matmul_shapes:
            parts = shape.lower().split("x")
            if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ValueError(f"matmul_shapes entry {shape!r} must be MxKxN with positive ints, e.g. 128x1536x384")
        if not self.attention_blocks or any(b < 16 or b & (b - 1) for b in self.attention_blocks):
            raise ValueError(f"attention_blocks={self.attention_blocks!r}: powers of two >= 16")
        if any(n < 1 for n in self.attention_lengths) or self.attention_window < 1:
            raise ValueError("attention_lengths and attention_window must be >= 1")
        if min(self.csr_nodes, self.csr_degree, self.csr_width, self.repeats) < 1:
            raise ValueError("csr_nodes, csr_degree, csr_width and repeats must be >= 1")
        bad = set(self.dtypes) - {"float32", "bfloat16"}
        if bad or not self.dtypes:
            raise ValueError(f"dtypes={self.dtypes!r}: use float32 and/or bfloat16")

    def inactive_fields(self) -> dict[str, str]:
        """Fields of the kernels not checked (`frugal.scripts.configs.check_inactive_flags`)."""
        owners = {
            "ant_matmul": ("matmul_shapes",),
            "hybrid_attention": ("attention_lengths", "attention_window", "attention_blocks", "attention_patterns"),
            "csr_matmul": ("csr_nodes", "csr_degree", "csr_width"),
        }
        return {
            name: f"unless --kernels names {kernel}"
            for kernel, names in owners.items()
            if kernel not in self.kernels
            for name in names
        }

    def matmuls(self) -> list[tuple[int, int, int]]:
        return [tuple(int(p) for p in s.lower().split("x")) for s in self.matmul_shapes]


PRESETS = check_presets(
    KernelCheckConfig,
    {
        "quick": KernelCheckConfig(
            matmul_shapes=("24x96x40",),
            attention_lengths=(64,),
            attention_window=8,
            attention_blocks=(16,),
            attention_patterns=False,  # ten interpret-mode cases; tests/systems/kernels runs one
            csr_nodes=50,
            csr_degree=3,
            csr_width=8,
            repeats=1,
            interpret=True,
        ),
        "tour": KernelCheckConfig(),
        "full": KernelCheckConfig(),
    },
)
