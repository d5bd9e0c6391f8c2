"""`run(KernelCheckConfig) -> figures`: every kernel in `frugal.jaxlib_ext` compiled for this device,
compared with its reference at several shapes and dtypes, and timed beside the XLA path.

On a CPU there is nothing to check (the kernels run there only in interpret mode, which the test suite
covers): the figures say so, unless `interpret=True` asks for a dry run of the whole procedure.
Timings are medians of `repeats` calls after one compiling call; "fraction of peak" divides the
achieved rate by the device's spec-sheet peak (dense bf16 or int8 FLOP/s for products, HBM bytes/s for
the CSR product), where the device is in `PEAKS`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from frugal.scripts import report
from frugal.scripts.systems.kernels.config import KernelCheckConfig

# Spec-sheet peaks per device kind substring: (bf16 dense FLOP/s, int8 dense OP/s, HBM bytes/s).
PEAKS = {
    "H200": (989e12, 1979e12, 4.8e12),
    "H100": (989e12, 1979e12, 3.35e12),
    "A100": (312e12, 624e12, 2.0e12),
    "L4": (121e12, 242e12, 0.3e12),
    "TPU v4": (275e12, 275e12, 1.2e12),
    "TPU v5 lite": (197e12, 394e12, 0.82e12),
    "TPU v5p": (459e12, 918e12, 2.76e12),
    "TPU v6": (918e12, 1836e12, 1.64e12),
}


def device_peaks() -> tuple[float, float, float] | None:
    kind = jax.devices()[0].device_kind
    for name, peaks in PEAKS.items():
        if name.lower() in kind.lower():
            return peaks
    return None


def _time(fn, *args, repeats: int) -> dict:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_s": statistics.median(times)}


def _relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))


def _fraction(rate: float, peak: float | None) -> float | None:
    return None if peak is None else rate / peak


def check_ant_matmul(config: KernelCheckConfig, peaks) -> list[dict]:
    from frugal.jaxlib_ext.ant_matmul import CodeFormat, ant_matmul

    rng = np.random.default_rng(config.seed)
    rows = []
    formats = [("int", "int", "int8 operands"), ("pot", "int", "bf16 operands")]
    for m, k, n in config.matmuls():
        a = jnp.asarray(rng.integers(0, 256, (m, (k + 1) // 2)), jnp.uint8)
        w = jnp.asarray(rng.integers(0, 256, ((k + 1) // 2, n)), jnp.uint8)
        sa, sw = jnp.asarray(rng.uniform(0.01, 0.1, m), jnp.float32), jnp.asarray(rng.uniform(0.5, 2, n), jnp.float32)
        for a_kind, w_kind, operands in formats:
            fmt = dict(a_format=CodeFormat(a_kind, False), w_format=CodeFormat(w_kind, True))
            kernel = jax.jit(lambda *x, fmt=fmt: ant_matmul(*x, **fmt, impl="pallas", interpret=config.interpret))
            xla = jax.jit(lambda *x, fmt=fmt: ant_matmul(*x, **fmt, impl="reference"))
            error = _relative_error(kernel(a, sa, w, sw), xla(a, sa, w, sw))
            t_kernel, t_xla = (
                _time(kernel, a, sa, w, sw, repeats=config.repeats),
                _time(xla, a, sa, w, sw, repeats=config.repeats),
            )
            flops = 2.0 * m * k * n
            peak = None if peaks is None else (peaks[1] if operands.startswith("int8") else peaks[0])
            rows.append(
                {
                    "kernel": "ant_matmul",
                    "case": f"{m}x{k}x{n} {a_kind}4u x {w_kind}4s ({operands})",
                    "relative_error": error,
                    "ok": error <= 1e-5,
                    "kernel_s": t_kernel["median_s"],
                    "xla_s": t_xla["median_s"],
                    "speedup_vs_xla": t_xla["median_s"] / t_kernel["median_s"],
                    "compile_s": t_kernel["first_call_s"],
                    "tflops": flops / t_kernel["median_s"] / 1e12,
                    "fraction_of_peak": _fraction(flops / t_kernel["median_s"], peak),
                }
            )
    return rows


def check_hybrid_attention(config: KernelCheckConfig, peaks) -> list[dict]:
    from frugal.transforms.attention import AttentionPattern, attention_flops, hybrid_attention

    rng = np.random.default_rng(config.seed + 1)
    half = config.attention_window // 2
    pattern = AttentionPattern(window=(half, half), global_tokens=(0,))
    heads = 2 if config.interpret else 12
    rows = []
    for n in config.attention_lengths:
        for dtype in config.dtypes:
            q, k, v = (jnp.asarray(rng.standard_normal((1, n, heads, 64)), dtype) for _ in range(3))
            paths = {}
            for impl in ("pallas", "banded"):
                extra = {"interpret": True} if impl == "pallas" and config.interpret else {}

                def forward(q, k, v, impl=impl, extra=extra):
                    return hybrid_attention(q, k, v, pattern, impl=impl, **extra)

                def loss(q, k, v, forward=forward):
                    return jnp.sum(forward(q, k, v).astype(jnp.float32))

                paths[impl] = (jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1, 2))))
            out = {impl: fwd(q, k, v) for impl, (fwd, _) in paths.items()}
            grads = {impl: grad(q, k, v) for impl, (_, grad) in paths.items()}
            error = _relative_error(out["pallas"], out["banded"])
            grad_error = max(_relative_error(a, b) for a, b in zip(grads["pallas"], grads["banded"]))
            tolerance = 1e-4 if dtype == "float32" else 3e-2
            times = {
                impl: (_time(fwd, q, k, v, repeats=config.repeats), _time(grad, q, k, v, repeats=config.repeats))
                for impl, (fwd, grad) in paths.items()
            }
            flops = attention_flops(n, pattern, heads, 64)
            rows.append(
                {
                    "kernel": "hybrid_attention",
                    "case": f"n={n} heads={heads} d=64 window={config.attention_window} +1 global, {dtype}",
                    "relative_error": max(error, grad_error),
                    "ok": error <= tolerance and grad_error <= 10 * tolerance,
                    "kernel_s": times["pallas"][0]["median_s"],
                    "xla_s": times["banded"][0]["median_s"],
                    "speedup_vs_xla": times["banded"][0]["median_s"] / times["pallas"][0]["median_s"],
                    "backward_kernel_s": times["pallas"][1]["median_s"],
                    "backward_xla_s": times["banded"][1]["median_s"],
                    "compile_s": times["pallas"][0]["first_call_s"],
                    "tflops": flops / times["pallas"][0]["median_s"] / 1e12,
                    "fraction_of_peak": _fraction(flops / times["pallas"][0]["median_s"], peaks and peaks[0]),
                }
            )
    return rows


def check_csr_matmul(config: KernelCheckConfig, peaks) -> list[dict]:
    """No Pallas kernel: on an accelerator the product is XLA's (cuSPARSE on GPU); checked and timed."""
    from frugal.jaxlib_ext.csr_matmul import csr_matmul

    rng = np.random.default_rng(config.seed + 2)
    rows_n, degree, width = config.csr_nodes, config.csr_degree, config.csr_width
    indptr = jnp.asarray(np.arange(rows_n + 1) * degree, jnp.int32)
    indices = jnp.asarray(rng.integers(0, rows_n, rows_n * degree), jnp.int32)
    out = []
    for dtype in config.dtypes:
        values = jnp.asarray(rng.standard_normal(rows_n * degree), dtype)
        dense = jnp.asarray(rng.standard_normal((rows_n, width)), dtype)
        xla = jax.jit(lambda *x: csr_matmul(*x, impl="xla"))
        reference = jax.jit(lambda *x: csr_matmul(*x, impl="reference"))
        error = _relative_error(xla(indptr, indices, values, dense), reference(indptr, indices, values, dense))
        t_xla = _time(xla, indptr, indices, values, dense, repeats=config.repeats)
        t_ref = _time(reference, indptr, indices, values, dense, repeats=config.repeats)
        itemsize = jnp.dtype(dtype).itemsize
        moved = rows_n * degree * (4 + itemsize + width * itemsize) + rows_n * width * itemsize
        out.append(
            {
                "kernel": "csr_matmul",
                "case": f"{rows_n} rows x {degree} entries, width {width}, {dtype} (XLA path; no Pallas kernel)",
                "relative_error": error,
                "ok": error <= (1e-5 if dtype == "float32" else 3e-2),
                "kernel_s": t_xla["median_s"],
                "xla_s": t_ref["median_s"],
                "speedup_vs_xla": t_ref["median_s"] / t_xla["median_s"],
                "compile_s": t_xla["first_call_s"],
                "gbytes_per_s": moved / t_xla["median_s"] / 1e9,
                "fraction_of_peak": _fraction(moved / t_xla["median_s"], peaks and peaks[2]),
            }
        )
    return out


CHECKS = {"ant_matmul": check_ant_matmul, "hybrid_attention": check_hybrid_attention, "csr_matmul": check_csr_matmul}


def run(config: KernelCheckConfig) -> dict:
    """Figures of every requested kernel, or a note that a CPU has nothing to check."""
    before = report.machine_description()
    backend = jax.default_backend()
    figures = {"config": dataclasses.asdict(config), "backend": backend, "device": jax.devices()[0].device_kind}
    if backend == "cpu" and not config.interpret:
        figures.update(
            rows=[],
            ok=None,
            message="nothing to check on a CPU: the Pallas kernels run here only in interpret mode, which the "
            "test suite covers; run this on a machine with a GPU or TPU (--interpret does a dry run here)",
        )
        return figures
    peaks = device_peaks()
    t0 = time.perf_counter()
    rows = [row for name in config.kernels for row in CHECKS[name](config, peaks)]
    figures.update(
        rows=rows,
        ok=all(r["ok"] for r in rows),
        peaks=None if peaks is None else dict(zip(("bf16_flops", "int8_ops", "hbm_bytes_per_s"), peaks)),
        seconds=time.perf_counter() - t0,
        machine=report.machine_record(before),
    )
    return figures


def markdown(figures: dict) -> str:
    if not figures["rows"]:
        return f"# frugal check-device\n\n{figures['message']}\n"
    lines = [
        "# frugal check-device",
        "",
        f"Device: {figures['device']} ({figures['backend']}); {report.machine_text(figures['machine'])}; "
        f"{figures['seconds']:.0f} s. All checks {'passed' if figures['ok'] else 'DID NOT pass'}.",
        "",
        report.markdown_table(
            ["kernel", "case", "rel. error", "ok", "kernel ms", "XLA ms", "speedup", "fraction of peak"],
            [
                [
                    r["kernel"],
                    r["case"],
                    r["relative_error"],
                    "yes" if r["ok"] else "NO",
                    1e3 * r["kernel_s"],
                    1e3 * r["xla_s"],
                    f"{r['speedup_vs_xla']:.2f}x",
                    "n/a" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f}%",
                ]
                for r in figures["rows"]
            ],
        ),
    ]
    return "\n".join(lines) + "\n"
