"""Activation-memory benchmark: every policy of `frugal.transforms.activation_policy` on four models.

For each model and policy it measures, side by side in one process:
  jit    one jitted train step: compiled `memory_analysis().temp_size_in_bytes` and step time.
  split  a jitted forward that returns its VJP residuals + a jitted backward that consumes them:
         residual bytes (tensors computed in the forward pass and kept for the backward, i.e.
         excluding parameters and the input batch, which live anyway), the two programs' temp
         bytes, and forward+backward time.
  eager  op-by-op (no jit): the bytes of the arrays the VJP closure holds, and step time.
plus every policy's gradient error against plain autodiff (the low-precision derivative's cost).
`auto` is a relabel of one policy where the regime decides alone (jit, eager) and is compiled and
timed as its own program where it decides per activation (split); `auto_checks` then compares it
with the fastest policy at equal memory and names any policy whose compiled programs are identical.
Ratios are taken against autodiff and against recompute from the same run.

XLA:CPU's `memory_analysis().peak_memory_in_bytes` leaves the temp buffers out, so temp and
residual bytes are reported separately. `run(config)` serves `frugal bench memory` and the tour.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.models.bench_nets import BertEncoder, GeluMLP, MishCNN, MobileNetSiLU
from frugal.scripts import report
from frugal.scripts.systems.activation_memory.config import ActivationMemoryConfig
from frugal.transforms.activation_policy import (
    AUTO_CHOICE,
    NESTED_MIN_RESIDUALS,
    PER_ACTIVATION,
    POLICIES,
    REGIMES,
    ActivationPolicy,
    activation_memory,
    activation_summary,
    saved_residuals,
)

MiB = 1024.0 * 1024.0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A benchmark model and the batch it trains on."""

    name: str
    description: str
    build: Callable[[nnx.Rngs], nnx.Module]
    make_batch: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]


def model_specs(small: bool) -> dict[str, ModelSpec]:
    """The four benchmark models; `small` shrinks widths and batches (same structure)."""

    def images(batch, size, classes=10):
        return lambda rng: (
            rng.standard_normal((batch, size, size, 3)).astype(np.float32),
            rng.integers(0, classes, batch).astype(np.int32),
        )

    if small:
        bert = dict(num_layers=1, dim=128, heads=4, hidden=512)
        bert_batch, bert_seq = 4, 32
        img_batch, img_size = 8, 16
        mlp = dict(num_layers=2, dim=128, hidden=512)
        mlp_rows = 256
        mish_widths = (16, 32, 64)
        mobile_stages = ((16, 1, 1), (24, 1, 2), (32, 1, 2))
    else:
        bert = dict(num_layers=2, dim=768, heads=12, hidden=3072)
        bert_batch, bert_seq = 8, 128
        img_batch, img_size = 32, 32
        mlp = dict(num_layers=6, dim=768, hidden=3072)
        mlp_rows = 512
        mish_widths = (32, 64, 128)
        mobile_stages = ((32, 2, 1), (48, 2, 2), (64, 2, 2))

    def tokens(rng):
        return (
            rng.integers(0, 1024, (bert_batch, bert_seq)).astype(np.int32),
            rng.integers(0, 2, bert_batch).astype(np.int32),
        )

    def rows(rng):
        return (
            rng.standard_normal((mlp_rows, mlp["dim"])).astype(np.float32),
            rng.integers(0, 10, mlp_rows).astype(np.int32),
        )

    return {
        "bert": ModelSpec(
            "bert",
            f"BERT-base-shaped encoder, {bert['num_layers']} layers x (dim {bert['dim']}, FFN {bert['hidden']}), "
            f"GELU (erf), batch {bert_batch} x seq {bert_seq}",
            lambda rngs: BertEncoder(**bert, rngs=rngs),
            tokens,
        ),
        "mobilenet_silu": ModelSpec(
            "mobilenet_silu",
            f"MobileNetV2-style CNN (inverted residuals, BN), SiLU, batch {img_batch} x {img_size}x{img_size}x3",
            lambda rngs: MobileNetSiLU(stages=mobile_stages, stem=mobile_stages[0][0], rngs=rngs),
            images(img_batch, img_size),
        ),
        "mish_cnn": ModelSpec(
            "mish_cnn",
            f"VGG-style CNN, 6 convs {mish_widths}, Mish, batch {img_batch} x {img_size}x{img_size}x3",
            lambda rngs: MishCNN(widths=mish_widths, rngs=rngs),
            images(img_batch, img_size),
        ),
        "gelu_mlp": ModelSpec(
            "gelu_mlp",
            f"MLP-dominated: {mlp['num_layers']} residual {mlp['dim']}->{mlp['hidden']} blocks, "
            f"GELU-tanh, {mlp_rows} rows",
            lambda rngs: GeluMLP(**mlp, rngs=rngs),
            rows,
        ),
    }


def _bytes(tree) -> int:
    return int(sum(np.prod(l.shape) * jnp.dtype(l.dtype).itemsize for l in jax.tree.leaves(tree)))


def _loss_builder(model: nnx.Module):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, rest, inputs, labels):
        # copy=True: the merged model's BatchNorm statistics are fresh Variables of this trace.
        net = nnx.merge(graphdef, params, rest, copy=True)
        logits = net(inputs)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        ).mean()

    return loss, params, rest


def _activation_residuals(loss, params, rest, inputs, labels) -> tuple[int, int]:
    """(count, bytes) of residuals computed in the forward pass (not parameters or the batch)."""
    found = saved_residuals(lambda p: loss(p, rest, inputs, labels), params)
    computed = [aval for aval, source in found if source != "argument" and aval.shape]
    return len(computed), _bytes(computed)


_DEBUG_TABLES = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")
_METADATA = re.compile(r",?\s*metadata=\{[^{}]*\}")


def _program_text(compiled) -> str:
    """A compiled program's HLO instructions, without what names or locates the source.

    Dropped: the module name line (it names the traced lambda), the debug tables of source files,
    functions and stack frames, and each instruction's `metadata={...}`. Two policies that lower to
    the same instructions then compare equal even though their Python differs, and so does a program
    read back from JAX's persistent compilation cache, whose debug tables come back in another order.
    """
    lines, in_table = [], False
    for line in compiled.as_text().splitlines():
        if line.startswith("HloModule"):
            continue
        if line.strip() in _DEBUG_TABLES:
            in_table = True
            continue
        if in_table:
            in_table = bool(line.strip())
            continue
        lines.append(_METADATA.sub("", line))
    return "\n".join(lines)


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def _policy_model(base: nnx.Module, policy: str, regime: str) -> nnx.Module:
    return activation_memory(base, ActivationPolicy(policy, regime=regime, check_elementwise=False))


def measure_model(spec: ModelSpec, config: ActivationMemoryConfig, progress: Callable[[str], None] = print) -> dict:
    """All policies x regimes for one model; timings interleaved round-robin over policies."""
    rng = np.random.default_rng(config.seed)
    base = spec.build(nnx.Rngs(config.seed))
    inputs, labels = (jnp.asarray(a) for a in spec.make_batch(rng))
    rows: list[dict] = []
    runners: dict[tuple[str, str], Callable[[], Any]] = {}
    gradients: dict[str, Any] = {}
    programs: dict[tuple[str, str], str] = {}  # split regime: the compiled programs' text, to compare auto's
    concrete = [p for p in config.policies if p != "auto"]
    for regime in config.regimes:
        # Where `auto` is one policy for the whole regime it is a relabel (the same program): it is
        # measured once, as that policy, and its row copies those figures below. Where it decides
        # per activation (split), it is compiled and timed as its own program.
        per_activation = AUTO_CHOICE[regime] == PER_ACTIVATION
        if per_activation:
            needed = concrete + ["auto"] * ("auto" in config.policies)
        else:
            needed = concrete + [AUTO_CHOICE[regime]] * (
                "auto" in config.policies and AUTO_CHOICE[regime] not in concrete
            )
        for policy in needed:
            model = _policy_model(base, policy, regime)
            loss, params, rest = _loss_builder(model)
            row = {"model": spec.name, "regime": regime, "policy": policy, "resolved": policy, "measured_as": policy}
            if policy == "auto":
                # What auto chose for each activation, e.g. {'recompute(gelu(approximate=False))': 2}.
                row["auto_activations"] = activation_summary(model)
                row["resolved"] = "+".join(sorted({name.split("(")[0] for name in row["auto_activations"]}))
            count, residual = _activation_residuals(loss, params, rest, inputs, labels)
            row["residual_tensors"] = count
            if regime == "jit":
                step = jax.jit(jax.value_and_grad(loss))
                compiled = step.lower(params, rest, inputs, labels).compile()
                row["temp_bytes"] = compiled.memory_analysis().temp_size_in_bytes
                row["residual_bytes"] = residual  # before XLA's own rematerialization
                row["memory_bytes"] = row["temp_bytes"]
                _, grads = compiled(params, rest, inputs, labels)
                gradients[policy] = grads
                runners[(regime, policy)] = lambda c=compiled, p=params, r=rest: c(p, r, inputs, labels)
            elif regime == "split":
                forward = jax.jit(lambda p, r, x, y, loss=loss: jax.vjp(lambda q: loss(q, r, x, y), p))
                backward = jax.jit(lambda vjp_fn: vjp_fn(jnp.ones((), jnp.float32)))
                fwd_c = forward.lower(params, rest, inputs, labels).compile()
                value, vjp_fn = fwd_c(params, rest, inputs, labels)
                bwd_c = backward.lower(vjp_fn).compile()
                row["residual_bytes"] = residual
                row["forward_output_bytes"] = fwd_c.memory_analysis().output_size_in_bytes
                row["forward_temp_bytes"] = fwd_c.memory_analysis().temp_size_in_bytes
                row["backward_temp_bytes"] = bwd_c.memory_analysis().temp_size_in_bytes
                row["memory_bytes"] = residual
                programs[(regime, policy)] = _program_text(fwd_c) + _program_text(bwd_c)

                def run_split(f=fwd_c, b=bwd_c, p=params, r=rest):
                    _, held = f(p, r, inputs, labels)
                    return b(held)

                runners[(regime, policy)] = run_split
            else:  # eager: op-by-op dispatch, the residuals are the arrays the VJP closure holds
                arguments = {id(a) for a in jax.tree.leaves((params, rest, inputs, labels))}

                def run_eager(p=params, r=rest, loss=loss):
                    with jax.disable_jit():
                        _, vjp_fn = jax.vjp(lambda q: loss(q, r, inputs, labels), p)
                        return vjp_fn(jnp.ones((), jnp.float32)), vjp_fn

                _, vjp_fn = run_eager()
                held = [l for l in jax.tree.leaves(vjp_fn) if id(l) not in arguments and getattr(l, "shape", ())]
                row["residual_bytes"] = _bytes(held)
                row["residual_bytes_traced"] = residual
                row["memory_bytes"] = row["residual_bytes"]
                runners[(regime, policy)] = lambda f=run_eager: f()[0]
            rows.append(row)
            progress(f"  {spec.name} {regime:5s} {policy:11s} memory {row['memory_bytes'] / MiB:8.1f} MiB")
        if "auto" in config.policies and per_activation:
            auto = next(r for r in rows if r["regime"] == regime and r["policy"] == "auto")
            # Honesty aid: a concrete policy whose compiled programs are identical to auto's, if any
            # (then any time difference between the two rows is measurement noise).
            auto["same_program_as"] = [
                p
                for p in concrete
                if (regime, p) in programs and programs[(regime, p)] == programs.get((regime, "auto"))
            ]
        elif "auto" in config.policies:
            chosen = next(r for r in rows if r["regime"] == regime and r["policy"] == AUTO_CHOICE[regime])
            rows.append(
                {**chosen, "policy": "auto", "resolved": AUTO_CHOICE[regime], "same_program_as": [chosen["policy"]]}
            )

    # Timing: warm up every runner once (eager ones already ran above), then interleave policies
    # so machine noise hits all alike.
    for (regime, _), fn in runners.items():
        if regime != "eager":
            _time(fn)
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    for _ in range(config.repeats):
        for key, fn in runners.items():
            samples[key].append(_time(fn))
    for row in rows:
        times = samples[(row["regime"], row["measured_as"])]
        # The minimum is the sample least disturbed by other load; the median is kept too.
        row["step_seconds"] = min(times)
        row["step_seconds_median"] = statistics.median(times)

    if "autodiff" in gradients:
        reference = jax.tree.leaves(gradients["autodiff"])
        ref_norm = float(np.sqrt(sum(float(jnp.sum(jnp.square(g))) for g in reference)))
        errors = {}
        for policy, grads in gradients.items():
            leaves = jax.tree.leaves(grads)
            diff = float(np.sqrt(sum(float(jnp.sum(jnp.square(a - b))) for a, b in zip(leaves, reference))))
            max_abs = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(leaves, reference))
            errors[policy] = {"relative_l2": diff / max(ref_norm, 1e-30), "max_abs": max_abs}
        for row in rows:
            row["gradient_error_vs_autodiff"] = errors.get(row["measured_as"], {}).get("relative_l2")
    _add_ratios(rows)
    return {
        "model": spec.name,
        "description": spec.description,
        "parameter_bytes": _bytes(nnx.state(base, nnx.Param)),
        "rows": rows,
    }


def _add_ratios(rows: list[dict]) -> None:
    by_key = {(r["regime"], r["policy"]): r for r in rows}
    for row in rows:
        for against in ("autodiff", "recompute"):
            other = by_key.get((row["regime"], against))
            if other is None:
                continue
            # "x lower" ratios: other / this, so > 1 means this policy keeps less / runs faster.
            row[f"memory_reduction_vs_{against}"] = other["memory_bytes"] / max(row["memory_bytes"], 1)
            row[f"speedup_vs_{against}"] = other["step_seconds"] / row["step_seconds"]


def auto_checks(rows: list[dict], *, time_tolerance: float = 0.05, memory_tolerance: float = 0.01) -> list[dict]:
    """Per model and regime: is `auto` no worse in memory than autodiff, and within
    `time_tolerance` of the fastest policy whose memory is within `memory_tolerance` of its own?"""
    checks = []
    for model, regime in sorted({(r["model"], r["regime"]) for r in rows}):
        group = {r["policy"]: r for r in rows if r["model"] == model and r["regime"] == regime}
        if "auto" not in group or "autodiff" not in group:
            continue
        auto = group["auto"]
        peers = [
            r
            for r in group.values()
            if abs(r["memory_bytes"] - auto["memory_bytes"]) <= memory_tolerance * max(auto["memory_bytes"], 1)
        ]
        fastest = min((r for r in peers if r["policy"] != "auto"), key=lambda r: r["step_seconds"], default=auto)
        auto_time = auto["step_seconds"]
        checks.append(
            {
                "model": model,
                "regime": regime,
                "auto_picks": auto["resolved"],
                "auto_measured_as": auto["measured_as"],
                "same_program_as": auto.get("same_program_as", []),
                "memory_not_worse_than_autodiff": auto["memory_bytes"]
                <= group["autodiff"]["memory_bytes"] * (1 + memory_tolerance),
                "fastest_at_equal_memory": fastest["policy"],
                "time_vs_fastest": auto_time / fastest["step_seconds"],
                "time_within_tolerance": auto_time <= fastest["step_seconds"] * (1 + time_tolerance),
            }
        )
    return checks


def reference_mlp_check() -> dict:
    """The issue's configuration (6 x 2048x768 -> 3072 GELU-tanh): compiled memory only, no run."""
    model = GeluMLP(num_layers=6, dim=768, hidden=3072, rngs=nnx.Rngs(0))
    inputs = jax.ShapeDtypeStruct((2048, 768), jnp.float32)
    labels = jax.ShapeDtypeStruct((2048,), jnp.int32)
    out = {}
    for policy in ("autodiff", "nested", "recompute", "nested_lowp"):
        loss, params, rest = _loss_builder(_policy_model(model, policy, "jit"))
        compiled = jax.jit(jax.value_and_grad(loss)).lower(params, rest, inputs, labels).compile()
        _, residual = _activation_residuals(
            loss, params, rest, jnp.zeros(inputs.shape), jnp.zeros(labels.shape, jnp.int32)
        )
        out[policy] = {
            "jit_temp_MiB": compiled.memory_analysis().temp_size_in_bytes / MiB,
            "split_residual_MiB": residual / MiB,
        }
    out["issue_reported_MiB"] = {
        "jit_temp": {"autodiff": 462, "nested": 462, "recompute": 318},
        "split_residual": {"autodiff": 1041, "nested": 465},
    }
    return out


def run(config: ActivationMemoryConfig, progress: Callable[[str], None] = print) -> dict:
    """Measures every model/policy/regime and returns the figures (see the module docstring)."""
    machine_before = report.machine_description()
    specs = model_specs(config.small)
    started = time.perf_counter()
    models = []
    for name in config.models:
        progress(f"{name}: {specs[name].description}")
        models.append(measure_model(specs[name], config, progress))
    rows = [row for m in models for row in m["rows"]]
    split_ratios = {
        r["model"]: r["memory_reduction_vs_autodiff"]
        for r in rows
        if r["regime"] == "split" and r["policy"] == "nested"
    }
    paper = {
        r["model"] + "/" + r["regime"]: r["speedup_vs_recompute"]
        for r in rows
        if r["policy"] == "nested" and r["regime"] in ("split", "eager") and "speedup_vs_recompute" in r
    }
    figures = {
        "config": dataclasses.asdict(config),
        "note": "step times are the fastest of the interleaved repeats",
        "auto_choice": dict(AUTO_CHOICE),
        "auto_rule": f"{PER_ACTIVATION}: nested when plain autodiff saves >= {NESTED_MIN_RESIDUALS} tensors "
        "for the activation, recompute otherwise",
        "models": models,
        "rows": rows,
        "auto_checks": auto_checks(rows),
        "split_residual_reduction_nested_vs_autodiff": split_ratios,
        "nested_speedup_vs_recompute": paper,
        "paper": {"memory_reduction": 1.97, "speedup_vs_recompute": 1.20},
    }
    if config.reference_check and not config.small:
        progress("reference: the issue's 6 x 2048x768->3072 GELU-tanh MLP (compile only)")
        figures["issue_reference_mlp"] = reference_mlp_check()
    figures["seconds"] = time.perf_counter() - started
    figures["machine"] = report.machine_record(machine_before)
    figures["machine_line"] = report.machine_line(machine_before)
    return figures


TABLE_HEADERS = [
    "model",
    "regime",
    "policy",
    "memory MiB",
    "x vs autodiff",
    "x vs recompute",
    "step ms",
    "speed vs autodiff",
    "speed vs recompute",
    "grad rel err",
]


def auto_check_rows(figures: dict) -> list[list]:
    """One row per auto check, for the console and the Markdown report."""
    return [
        [
            c["model"],
            c["regime"],
            c["auto_picks"],
            c["auto_measured_as"],
            ", ".join(c["same_program_as"]) or "-",
            c["memory_not_worse_than_autodiff"],
            c["fastest_at_equal_memory"],
            c["time_vs_fastest"],
            c["time_within_tolerance"],
        ]
        for c in figures["auto_checks"]
    ]


def table_rows(figures: dict) -> list[list]:
    out = []
    for r in figures["rows"]:
        policy = r["policy"] if r["policy"] != "auto" else f"auto->{r['resolved']}"
        out.append(
            [
                r["model"],
                r["regime"],
                policy,
                r["memory_bytes"] / MiB,
                r.get("memory_reduction_vs_autodiff", float("nan")),
                r.get("memory_reduction_vs_recompute", float("nan")),
                1e3 * r["step_seconds"],
                r.get("speedup_vs_autodiff", float("nan")),
                r.get("speedup_vs_recompute", float("nan")),
                r.get("gradient_error_vs_autodiff") if r.get("gradient_error_vs_autodiff") is not None else "-",
            ]
        )
    return out


def markdown_report(figures: dict) -> str:
    from frugal.scripts.report import markdown_table

    lines = [
        "# Activation memory: autodiff vs nested forward-AD vs recompute",
        "",
        f"Measured on {figures['machine_line']}; {figures['note']}.",
        "",
        "Memory column: **jit** = compiled temp bytes of one jitted train step; **split** = residual bytes a jitted "
        "forward hands to a jitted backward (tensors computed in the forward pass; parameters and the batch "
        "excluded); **eager** = bytes held by the op-by-op VJP closure. `x vs ...` = that policy's memory / this "
        "row's (above 1 = this row keeps less); speed = that policy's time / this row's.",
        "",
        "Step times are the fastest of the interleaved repeats (medians are in the JSON).",
        "",
        "Models: " + "; ".join(f"**{m['model']}**: {m['description']}" for m in figures["models"]),
        "",
        markdown_table(TABLE_HEADERS, table_rows(figures)),
        "",
        "## Split-program residual reduction, nested vs autodiff (paper: up to 1.97x)",
        "",
        markdown_table(["model", "reduction"], sorted(figures["split_residual_reduction_nested_vs_autodiff"].items())),
        "",
        "## Nested vs recompute step time where the paper's regime applies (paper: 1.20x)",
        "",
        markdown_table(
            ["model/regime", "nested speed-up vs recompute"], sorted(figures["nested_speedup_vs_recompute"].items())
        ),
        "",
        "## What `auto` picks, and the checks",
        "",
        f"Rule: {', '.join(f'{k} -> {v}' for k, v in figures['auto_choice'].items())}; {figures['auto_rule']}. "
        "`measured as auto` = compiled and timed as its own program; otherwise the row is the chosen policy's. "
        "`same program as` = concrete policies whose compiled programs are identical to auto's (a time "
        "difference against them is noise).",
        "",
        markdown_table(
            [
                "model",
                "regime",
                "auto picks",
                "measured as",
                "same program as",
                "memory <= autodiff",
                "fastest at equal memory",
                "auto time / fastest",
                "within 5%",
            ],
            auto_check_rows(figures),
        ),
    ]
    detail = []
    for r in figures["rows"]:
        if r["regime"] == "split":
            peak = r["residual_bytes"] + max(r["forward_temp_bytes"], r["backward_temp_bytes"])
            detail.append(
                [
                    r["model"],
                    r["policy"],
                    r["residual_tensors"],
                    r["residual_bytes"] / MiB,
                    r["forward_temp_bytes"] / MiB,
                    r["backward_temp_bytes"] / MiB,
                    peak / MiB,
                ]
            )
    lines += [
        "",
        "## Split programs in detail (MiB)",
        "",
        "Activation memory at the split's high-water mark is about residuals + the larger program temp "
        "(parameters, the batch and gradients come on top for every policy alike).",
        "",
        markdown_table(
            ["model", "policy", "residual tensors", "residual", "forward temp", "backward temp", "residual + max temp"],
            detail,
        ),
    ]
    jit_rows = [
        [
            r["model"],
            r["policy"],
            r["temp_bytes"] / MiB,
            r["residual_bytes"] / MiB,
            r.get("gradient_error_vs_autodiff", "-"),
        ]
        for r in figures["rows"]
        if r["regime"] == "jit"
    ]
    lines += [
        "",
        "## One jitted step: compiled temp vs traced residuals (MiB) and gradient error",
        "",
        "Traced residuals are what reverse mode asks to keep; XLA fuses and re-materializes element-wise "
        "chains inside one program, which is why temp barely moves with the policy.",
        "",
        markdown_table(
            ["model", "policy", "compiled temp", "traced residuals", "grad rel. L2 error vs autodiff"], jit_rows
        ),
    ]
    if "issue_reference_mlp" in figures:
        ref = figures["issue_reference_mlp"]
        lines += [
            "",
            "## The issue's 6 x 2048x768->3072 GELU-tanh MLP (compile only, MiB)",
            "",
            markdown_table(
                ["policy", "jit temp", "split residuals"],
                [[p, v["jit_temp_MiB"], v["split_residual_MiB"]] for p, v in ref.items() if p != "issue_reported_MiB"],
            ),
            "",
            f"Issue reported: {ref['issue_reported_MiB']}",
        ]
    return "\n".join(lines) + "\n"


def plot_memory(figures: dict, path: Path) -> Path:
    """Grouped bars: memory per policy, one panel per regime, models on the x axis."""
    from frugal.scripts.report import new_figure, save_figure

    regimes = [g for g in REGIMES if any(r["regime"] == g for r in figures["rows"])]
    fig, axes = new_figure(1, len(regimes), figsize=(5 * len(regimes), 3.6), squeeze=False)
    models = [m["model"] for m in figures["models"]]
    policies = [p for p in POLICIES if any(r["policy"] == p for r in figures["rows"])]
    width = 0.8 / len(policies)
    for ax, regime in zip(axes[0], regimes):
        for i, policy in enumerate(policies):
            values = []
            for model in models:
                match = [
                    r
                    for r in figures["rows"]
                    if r["model"] == model and r["regime"] == regime and r["policy"] == policy
                ]
                values.append(match[0]["memory_bytes"] / MiB if match else 0.0)
            ax.bar(np.arange(len(models)) + i * width, values, width, label=policy)
        ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models, rotation=20)
        ax.set_title(
            {"jit": "one jitted step: temp", "split": "split: residuals", "eager": "op-by-op: residuals"}[regime]
        )
        ax.set_ylabel("MiB")
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, path)


def markdown_table_for_tour(figures: dict) -> str:
    """The compact table for `frugal tour`: the memory table plus what auto picks."""
    from frugal.scripts.report import markdown_table

    return "\n".join(
        [
            "Memory a training step keeps for its activations under each policy "
            "(`frugal.transforms.activation_policy`): "
            "**jit** = compiled temp bytes of one jitted step, **split** = residual bytes between a jitted forward and "
            "a jitted backward, **eager** = bytes held by the op-by-op VJP. "
            f"{figures['models'][0]['description']}. Measured on {figures['machine_line']}; {figures['note']}.",
            "",
            markdown_table(TABLE_HEADERS, table_rows(figures)),
            "",
            "`auto` picks "
            + ", ".join(f"{k} -> {v}" for k, v in figures["auto_choice"].items())
            + f" ({figures['auto_rule']}); the full benchmark is `frugal bench memory`.",
        ]
    )
