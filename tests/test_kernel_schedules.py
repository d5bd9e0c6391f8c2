"""Structure of every Pallas kernel in jaxlib_ext, per backend: no output block is revisited across
grid steps along an axis that backend may run in parallel.

Interpret mode runs grid steps in order, so a kernel that accumulates into an output block across
grid steps passes its numeric tests on CPU and races on a GPU. Pallas-Triton launches every grid
axis as parallel CUDA blocks (nothing may be revisited); Mosaic TPU runs an axis in order only when
its dimension_semantics says "arbitrary". This test reads each pallas_call's grid, output index
maps and compiler parameters from the jaxpr of the kernel as built for GPU and TPU, and evaluates
the index maps over the whole grid.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.jaxlib_ext.ant_matmul import CodeFormat, ant_matmul
from frugal.jaxlib_ext.hybrid_attention import hybrid_attention_pallas


def pallas_calls(jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pallas_call":
            yield eqn
        for value in eqn.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(item, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    yield from pallas_calls(inner)
                elif hasattr(item, "eqns"):
                    yield from pallas_calls(item)


def revisit_violations(eqn, backend: str) -> list[str]:
    """Output blocks written by two grid steps that differ along an axis `backend` runs in parallel."""
    mapping = eqn.params["grid_mapping"]
    grid = tuple(int(g) for g in mapping.grid)
    params = eqn.params["compiler_params"]
    semantics = getattr(params, "dimension_semantics", None) if backend == "tpu" else None
    sequential = {i for i, s in enumerate(semantics or ()) if "arbitrary" in str(s).lower()}
    problems = []
    for index, block in enumerate(mapping.block_mappings[mapping.num_inputs :]):
        closed = block.index_map_jaxpr
        seen: dict[tuple, tuple] = {}
        for point in itertools.product(*(range(g) for g in grid)):
            out = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *(np.int32(p) for p in point))
            key = tuple(int(o) for o in out)
            if key in seen:
                differs = {axis for axis, (a, b) in enumerate(zip(seen[key], point)) if a != b}
                if differs - sequential:
                    problems.append(
                        f"output {index}: block {key} written at grid steps {seen[key]} and {point} "
                        f"(axes {sorted(differs)}; {backend} runs {sorted(sequential) or 'none'} in order)"
                    )
                    break
            else:
                seen[key] = point
    return problems


def ant_kernel_jaxpr(target: str):
    fn = functools.partial(
        ant_matmul,
        a_format=CodeFormat("int", False),
        w_format=CodeFormat("int", True),
        impl="pallas",
        target=target,
        interpret=False,
        # several tiles along every axis, K = 1536 (MiniLM's FFN) in several blocks
        **(dict(block_m=16, block_n=32, block_k=128) if target == "gpu" else dict(block_m=32, block_n=128)),
    )
    return jax.make_jaxpr(fn)(
        jnp.zeros((64, 768), jnp.uint8), jnp.float32(1), jnp.zeros((768, 256), jnp.uint8), jnp.ones(256)
    ).jaxpr


def attention_kernel_jaxpr(target: str):
    backend = "triton" if target == "gpu" else "mosaic_tpu"
    block = 64 if target == "gpu" else 128
    spec = jax.ShapeDtypeStruct((1, 512, 2, 64), jnp.float32)

    def forward(q, k, v):
        return hybrid_attention_pallas(
            q,
            k,
            v,
            window=(32, 32),
            dilation=(1, 2),
            global_tokens=(0, 100),
            causal=False,
            block_size=block,
            interpret=False,
            backend=backend,
        )

    grad = jax.grad(lambda q, k, v: jnp.sum(forward(q, k, v)), argnums=(0, 1, 2))
    return jax.make_jaxpr(grad)(spec, spec, spec).jaxpr


KERNELS = {"ant_matmul": ant_kernel_jaxpr, "hybrid_attention (forward + backward)": attention_kernel_jaxpr}


@pytest.mark.parametrize("target", ["gpu", "tpu"])
@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_no_output_block_revisited_along_a_parallel_axis(kernel, target):
    calls = list(pallas_calls(KERNELS[kernel](target)))
    assert calls, f"{kernel}: no pallas_call found"
    problems = [p for eqn in calls for p in revisit_violations(eqn, target)]
    assert not problems, f"{kernel} on {target}:\n" + "\n".join(problems)


def test_the_check_catches_accumulation_across_a_parallel_grid_axis():
    """The old ANT kernel's structure (K as a grid axis, output tile revisited) is flagged on GPU, and
    on TPU unless the K axis is marked arbitrary."""
    fn = functools.partial(
        ant_matmul,
        a_format=CodeFormat("int", False),
        w_format=CodeFormat("int", True),
        impl="pallas",
        target="tpu",
        interpret=False,
        block_m=32,
        block_n=128,
    )
    args = (jnp.zeros((64, 768), jnp.uint8), jnp.float32(1), jnp.zeros((768, 256), jnp.uint8), jnp.ones(256))
    (eqn,) = pallas_calls(jax.make_jaxpr(fn)(*args).jaxpr)
    assert revisit_violations(eqn, "tpu") == []
    assert revisit_violations(eqn, "gpu")  # the same grid on Triton would race
    parallel = eqn.replace(params={**eqn.params, "compiler_params": None})
    assert revisit_violations(parallel, "tpu")  # no "arbitrary" marking: flagged
