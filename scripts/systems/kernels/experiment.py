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


def _guarded(kernel: str, case: str, check) -> dict:
    """`check()`'s row, or a failed row that carries the error, so one case that does not compile or
    crashes on this device does not hide the others."""
    t0 = time.perf_counter()
    try:
        return {**check(), "wall_s": time.perf_counter() - t0}
    except Exception as error:  # reported in the row, and the row fails the run
        message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        return {
            "kernel": kernel,
            "case": case,
            "relative_error": float("nan"),
            "ok": False,
            "error": message,
            "kernel_s": float("nan"),
            "xla_s": float("nan"),
            "speedup_vs_xla": float("nan"),
            "fraction_of_peak": None,
            "wall_s": time.perf_counter() - t0,
        }


def check_ant_matmul(config: KernelCheckConfig, peaks):
    """Rows (a generator, like every check) of the packed 4-bit ANT product against its reference."""
    from frugal.jaxlib_ext.ant_matmul import CodeFormat, ant_matmul

    rng = np.random.default_rng(config.seed)
    formats = [("int", "int", "int8 operands"), ("pot", "int", "bf16 operands")]
    for m, k, n in config.matmuls():
        a = jnp.asarray(rng.integers(0, 256, (m, (k + 1) // 2)), jnp.uint8)
        w = jnp.asarray(rng.integers(0, 256, ((k + 1) // 2, n)), jnp.uint8)
        sa, sw = jnp.asarray(rng.uniform(0.01, 0.1, m), jnp.float32), jnp.asarray(rng.uniform(0.5, 2, n), jnp.float32)
        for a_kind, w_kind, operands in formats:
            case = f"{m}x{k}x{n} {a_kind}4u x {w_kind}4s ({operands})"

            def check(a_kind=a_kind, w_kind=w_kind, operands=operands, case=case, m=m, k=k, n=n):
                fmt = dict(a_format=CodeFormat(a_kind, False), w_format=CodeFormat(w_kind, True))
                kernel = jax.jit(lambda *x: ant_matmul(*x, **fmt, impl="pallas", interpret=config.interpret))
                xla = jax.jit(lambda *x: ant_matmul(*x, **fmt, impl="reference"))
                error = _relative_error(kernel(a, sa, w, sw), xla(a, sa, w, sw))
                t_kernel, t_xla = (
                    _time(kernel, a, sa, w, sw, repeats=config.repeats),
                    _time(xla, a, sa, w, sw, repeats=config.repeats),
                )
                flops = 2.0 * m * k * n
                peak = None if peaks is None else (peaks[1] if operands.startswith("int8") else peaks[0])
                return {
                    "kernel": "ant_matmul",
                    "case": case,
                    "relative_error": error,
                    "ok": error <= 1e-5,
                    "kernel_s": t_kernel["median_s"],
                    "xla_s": t_xla["median_s"],
                    "speedup_vs_xla": t_xla["median_s"] / t_kernel["median_s"],
                    "compile_s": t_kernel["first_call_s"],
                    "tflops": flops / t_kernel["median_s"] / 1e12,
                    "fraction_of_peak": _fraction(flops / t_kernel["median_s"], peak),
                }

            yield _guarded("ant_matmul", case, check)


def _attention_paths(pattern, impls, interpret: bool, block_size: int | None = None, **kw):
    """{impl: (jitted forward, jitted gradient of the summed output w.r.t. q, k, v)}."""
    from frugal.transforms.attention import hybrid_attention

    paths = {}
    for impl in impls:
        extra = {"interpret": True} if impl == "pallas" and interpret else {}
        if impl == "pallas" and block_size is not None:
            extra["block_size"] = block_size

        def forward(q, k, v, impl=impl, extra=extra):
            return hybrid_attention(q, k, v, pattern, impl=impl, **extra, **kw)

        def loss(q, k, v, forward=forward):
            return jnp.sum(forward(q, k, v).astype(jnp.float32))

        paths[impl] = (jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1, 2))))
    return paths


def _attention_errors(paths, q, k, v, against: str, kernel_precision: str | None) -> tuple[float, float]:
    """Largest relative errors of the kernel's output and gradients against the `against` path run at
    "highest" matmul precision (IEEE float32 products). The kernel runs at `kernel_precision` (None:
    the default, TF32 products on GPU for float32 inputs)."""
    with jax.default_matmul_precision("highest"):
        want_out, want_grads = paths[against][0](q, k, v), paths[against][1](q, k, v)
    with jax.default_matmul_precision(kernel_precision):
        got_out, got_grads = paths["pallas"][0](q, k, v), paths["pallas"][1](q, k, v)
    error = _relative_error(got_out, want_out)
    grad_error = max(_relative_error(a, b) for a, b in zip(got_grads, want_grads))
    return error, grad_error


# Relative error allowed against an IEEE float32 reference: float32 inputs at the default precision
# use TF32 products on GPU (10-bit mantissa, ~5e-4 per product), bf16 inputs bf16 products.
TOLERANCES = {("float32", "highest"): 1e-4, ("float32", None): 2e-3, ("bfloat16", None): 3e-2}


def check_hybrid_attention(config: KernelCheckConfig, peaks):
    from frugal.transforms.attention import AttentionPattern, attention_flops

    rng = np.random.default_rng(config.seed + 1)
    half = config.attention_window // 2
    pattern = AttentionPattern(window=(half, half), global_tokens=(0,))
    heads = 2 if config.interpret else 12
    for n in config.attention_lengths:
        for dtype in config.dtypes:
            q, k, v = (jnp.asarray(rng.standard_normal((1, n, heads, 64)), dtype) for _ in range(3))
            xla = _attention_paths(pattern, ("banded",), config.interpret)["banded"]
            xla_times = {}  # timed once per length and dtype, beside every block size

            for block in config.attention_blocks:
                case = f"n={n} heads={heads} d=64 window={config.attention_window} +1 global, {dtype}, block {block}"

                def check(n=n, dtype=dtype, q=q, k=k, v=v, xla=xla, xla_times=xla_times, block=block, case=case):
                    paths = {**_attention_paths(pattern, ("pallas",), config.interpret, block), "banded": xla}
                    error, grad_error = _attention_errors(paths, q, k, v, against="banded", kernel_precision=None)
                    tolerance = TOLERANCES[dtype, None]
                    if not xla_times:
                        xla_times["fwd"] = _time(xla[0], q, k, v, repeats=config.repeats)
                        xla_times["grad"] = _time(xla[1], q, k, v, repeats=config.repeats)
                    fwd = _time(paths["pallas"][0], q, k, v, repeats=config.repeats)
                    grad = _time(paths["pallas"][1], q, k, v, repeats=config.repeats)
                    flops = attention_flops(n, pattern, heads, 64)
                    return {
                        "kernel": "hybrid_attention",
                        "case": case,
                        "relative_error": max(error, grad_error),
                        "ok": error <= tolerance and grad_error <= 10 * tolerance,
                        "kernel_s": fwd["median_s"],
                        "xla_s": xla_times["fwd"]["median_s"],
                        "speedup_vs_xla": xla_times["fwd"]["median_s"] / fwd["median_s"],
                        "backward_kernel_s": grad["median_s"],
                        "backward_xla_s": xla_times["grad"]["median_s"],
                        "compile_s": fwd["first_call_s"],
                        "tflops": flops / fwd["median_s"] / 1e12,
                        "fraction_of_peak": _fraction(flops / fwd["median_s"], peaks and peaks[0]),
                    }

                yield _guarded("hybrid_attention", case, check)
    if config.attention_patterns:
        yield from check_attention_patterns(config)


# Small patterns that exercise every branch of the attention kernel on the device: odd lengths (padding),
# per-head dilation, several global tokens (one of them the last token), key padding, causal order and
# Longformer's separate global projections. Correctness only (forward and gradients against dense).
PATTERN_CASES = (
    ("odd n, per-head dilation (1, 2, 3, 1)", 301, dict(window=(7, 5), dilation=(1, 2, 3, 1)), {}),
    ("global tokens 0, 17, last", 300, dict(window=(8, 8), global_tokens=(0, 17, 299)), {}),
    ("key padding + globals", 250, dict(window=(16, 16), global_tokens=(0, 1)), {"key_mask": True}),
    ("causal + global", 200, dict(window=(20, 0), global_tokens=(0,), causal=True), {}),
    ("Longformer global projections", 257, dict(window=(16, 16), global_tokens=(0, 5)), {"global_qkv": True}),
)


def check_attention_patterns(config: KernelCheckConfig):
    from frugal.transforms.attention import AttentionPattern

    rng = np.random.default_rng(config.seed + 3)
    for name, n, fields, extras in PATTERN_CASES:
        for dtype in config.dtypes:
            case = f"pattern: {name}, n={n}, {dtype}" + (" (IEEE products)" if dtype == "float32" else "")

            def check(n=n, fields=fields, extras=extras, dtype=dtype, case=case):
                pattern = AttentionPattern(**fields)
                q, k, v = (jnp.asarray(rng.standard_normal((2, n, 4, 32)), dtype) for _ in range(3))
                kw = {}
                if extras.get("key_mask"):
                    kw["key_mask"] = jnp.asarray(np.arange(n)[None, :] < np.array([[n], [n - 37]]))
                if extras.get("global_qkv"):
                    kw["global_qkv"] = tuple(jnp.asarray(rng.standard_normal((2, n, 4, 32)), dtype) for _ in range(3))
                paths = _attention_paths(pattern, ("pallas", "dense"), config.interpret, **kw)
                precision = "highest" if dtype == "float32" else None
                error, grad_error = _attention_errors(paths, q, k, v, against="dense", kernel_precision=precision)
                tolerance = TOLERANCES[dtype, precision]
                return {
                    "kernel": "hybrid_attention",
                    "case": case,
                    "relative_error": max(error, grad_error),
                    "ok": error <= tolerance and grad_error <= 10 * tolerance,
                    "kernel_s": float("nan"),
                    "xla_s": float("nan"),
                    "speedup_vs_xla": float("nan"),
                    "fraction_of_peak": None,
                }

            yield _guarded("hybrid_attention", case, check)


def check_csr_matmul(config: KernelCheckConfig, peaks):
    """No Pallas kernel: on an accelerator the product is XLA's (cuSPARSE on GPU); checked and timed."""
    from frugal.jaxlib_ext.csr_matmul import csr_matmul

    rng = np.random.default_rng(config.seed + 2)
    rows_n, degree, width = config.csr_nodes, config.csr_degree, config.csr_width
    indptr = jnp.asarray(np.arange(rows_n + 1) * degree, jnp.int32)
    indices = jnp.asarray(rng.integers(0, rows_n, rows_n * degree), jnp.int32)
    for dtype in config.dtypes:
        case = f"{rows_n} rows x {degree} entries, width {width}, {dtype} (XLA path; no Pallas kernel)"

        def check(dtype=dtype, case=case):
            values = jnp.asarray(rng.standard_normal(rows_n * degree), dtype)
            dense = jnp.asarray(rng.standard_normal((rows_n, width)), dtype)
            xla = jax.jit(lambda *x: csr_matmul(*x, impl="xla"))
            reference = jax.jit(lambda *x: csr_matmul(*x, impl="reference"))
            error = _relative_error(xla(indptr, indices, values, dense), reference(indptr, indices, values, dense))
            t_xla = _time(xla, indptr, indices, values, dense, repeats=config.repeats)
            t_ref = _time(reference, indptr, indices, values, dense, repeats=config.repeats)
            itemsize = jnp.dtype(dtype).itemsize
            moved = rows_n * degree * (4 + itemsize + width * itemsize) + rows_n * width * itemsize
            return {
                "kernel": "csr_matmul",
                "case": case,
                "relative_error": error,
                "ok": error <= (1e-5 if dtype == "float32" else 3e-2),
                "kernel_s": t_xla["median_s"],
                "xla_s": t_ref["median_s"],
                "speedup_vs_xla": t_ref["median_s"] / t_xla["median_s"],
                "compile_s": t_xla["first_call_s"],
                "gbytes_per_s": moved / t_xla["median_s"] / 1e9,
                "fraction_of_peak": _fraction(moved / t_xla["median_s"], peaks and peaks[2]),
            }

        yield _guarded("csr_matmul", case, check)


CHECKS = {"ant_matmul": check_ant_matmul, "hybrid_attention": check_hybrid_attention, "csr_matmul": check_csr_matmul}


def run(config: KernelCheckConfig, on_row=None) -> dict:
    """Figures of every requested kernel, or a note that a CPU has nothing to check.

    `on_row(row, rows_so_far)` is called as each case finishes (the command prints it and keeps a
    partial report on disk, so a run cut short by its time limit still leaves its figures)."""
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
    rows = []
    for name in config.kernels:
        for row in CHECKS[name](config, peaks):
            rows.append(row)
            if on_row is not None:
                on_row(row, rows)
    figures.update(
        rows=rows,
        ok=all(r["ok"] for r in rows),
        peaks=None if peaks is None else dict(zip(("bf16_flops", "int8_ops", "hbm_bytes_per_s"), peaks)),
        seconds=time.perf_counter() - t0,
        machine=report.machine_record(before),
    )
    return figures


def _ms(seconds: float) -> str:
    return "n/a" if not np.isfinite(seconds) else f"{1e3 * seconds:.3g}"


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
            [
                "kernel",
                "case",
                "rel. error",
                "ok",
                "kernel ms",
                "XLA ms",
                "speedup",
                "fraction of peak",
                "fwd+bwd kernel ms",
                "fwd+bwd XLA ms",
            ],
            [
                [
                    r["kernel"],
                    r["case"],
                    r["relative_error"],
                    "yes" if r["ok"] else "NO",
                    _ms(r["kernel_s"]),
                    _ms(r["xla_s"]),
                    "n/a" if not np.isfinite(r["speedup_vs_xla"]) else f"{r['speedup_vs_xla']:.2f}x",
                    "n/a" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f}%",
                    _ms(r.get("backward_kernel_s", float("nan"))),
                    _ms(r.get("backward_xla_s", float("nan"))),
                ]
                for r in figures["rows"]
            ],
        ),
    ]
    errors = [f"- {r['kernel']}, {r['case']}: {r['error']}" for r in figures["rows"] if r.get("error")]
    if errors:
        lines += ["", "Cases that raised on this device:", "", *errors]
    return "\n".join(lines) + "\n"
