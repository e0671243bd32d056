"""Each native kernel of ``zorb.kernels`` beside the pure-JAX path that replaces it where the
extension is absent (``ZORB_NATIVE_BLAS=0``, another backend): the same public calls, timed
in one worker with the kernels and one without, twice each, alternated; and the whole mnist_6
gram fit both ways. Shapes are mnist_6's and conv1's."""

from __future__ import annotations

import time

from benchmarks.common import network_specs, run_worker, section

OFF = {"ZORB_NATIVE_BLAS": "0"}


def best(fn, repeats=3):
    import jax

    jax.block_until_ready(fn())  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def work_kernels(cfg):
    """Worker: seconds of each call (best of three warm), and of a warm mnist_6 gram fit."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import zorb
    from zorb.core.layers import Tanh
    from zorb.core.solvers import gram_moments, solve_from_gram
    from zorb.kernels import native
    from zorb.kernels.conv import conv2d, conv_moments, extract_patches
    from zorb.kernels.products import gram, matmul
    from zorb.kernels.squash import extrema

    rows, images = cfg["rows"], cfg["images"]
    rng = np.random.default_rng(0)
    a, w = jnp.asarray(rng.random((rows, 1000))), jnp.asarray(rng.random((1000, 800)))
    low_rank = rng.standard_normal((3000, 120)) @ rng.standard_normal((120, 1001)) / 30
    full = np.hstack([np.tanh(rng.standard_normal((rows, 1000))), np.ones((rows, 1))])
    targets = rng.standard_normal((rows, 800))
    systems = {"nothing cut": (full.T @ full, full.T @ targets),
               "rank 120": (low_rank.T @ low_rank, low_rank.T @ rng.standard_normal((3000, 800)))}
    t, bias = jnp.asarray(rng.normal(size=(rows, 1000)) * 3), jnp.asarray(rng.normal(size=1000))
    tanh = Tanh.build((1000,), None, jnp.float64).with_range(jnp.min(t), jnp.max(t))
    x, kernel = jnp.asarray(rng.random((images, 32, 32, 3))), jnp.asarray(rng.standard_normal((3, 3, 3, 32)))
    conv_t, conv_bias = jnp.asarray(rng.standard_normal((images, 30, 30, 32))), jnp.asarray(rng.standard_normal(32))
    values = jnp.asarray(rng.standard_normal((1000, rows)))

    def patch_moments(x, t):
        patches = extract_patches(x, 3, 1)
        return gram_moments(patches.reshape(-1, 27), t.reshape(-1, 32), bias=True)

    calls = {  # arguments, not closures: XLA would fold products of constants at compile time
        f"product {rows:,} x 1,000 x 800": (jax.jit(matmul), a, w),
        f"Gram matrix of {rows:,} x 1,000": (jax.jit(gram), a),
        **{f"gram solve 1,001^2, 800 targets, {name}": (
            jax.jit(lambda g, m: solve_from_gram(g, m, 3000, 1e-7, 0.0)[0]), jnp.asarray(g), jnp.asarray(m))
           for name, (g, m) in systems.items()},
        f"Tanh inverse of a {rows:,} x 1,000 target, bias subtracted": (
            jax.jit(lambda t, b: tanh.inverse_in_range(t, b)), t, bias),
        f"conv1 forward, {images:,} 32x32x3 images": (jax.jit(lambda x, k, b: conv2d(x, k, 1, b)), x, kernel,
                                                      conv_bias),
        f"conv1 normal equations, {images:,} images": (
            jax.jit(lambda x, t: conv_moments(x, t, 3, 1, reference=patch_moments)), x, conv_t),
        f"min and max of {values.size:,} values": (jax.jit(extrema), values),
    }
    out = {name: best(lambda f=f, args=args: f(*args)) for name, (f, *args) in calls.items()}
    x, y = rng.random((rows, 784)), np.eye(10)[rng.integers(0, 10, rows)]
    net = zorb.build_network(network_specs("mnist_6"), (784,), output_dim=10, seed=0)
    zorb.fit(net, x, y, solver="gram", rcond=1e-7)
    out[f"mnist_6 gram fit, {rows:,} rows"] = min(zorb.fit(net, x, y, solver="gram", rcond=1e-7)[1].fit_seconds
                                                  for _ in range(2))
    return {"native": native.NATIVE, "seconds": out}


def kernels_section(results):
    args = results.args
    cfg = {"task": "kernels", "rows": 1_200 if args.quick else 10_000, "images": 64 if args.quick else 1_280}
    section("zorb.kernels beside the pure-JAX path (ZORB_NATIVE_BLAS=0), the same calls, workers alternated")
    runs = {"kernels": [], "jax": []}
    for _ in range(2):
        runs["kernels"].append(run_worker(cfg))
        runs["jax"].append(run_worker(cfg, env_extra=OFF))
    if not runs["kernels"][0]["native"]:
        print("  the extension is not built (or ZORB_NATIVE_BLAS=0 is set): both columns are the pure-JAX path")
    print(f"  {'call':58s} {'kernels ms':>10s} {'JAX ms':>10s} {'speed-up':>8s}")
    for name in runs["kernels"][0]["seconds"]:
        ours, theirs = (min(r["seconds"][name] for r in runs[side]) for side in ("kernels", "jax"))
        print(f"  {name:58s} {ours * 1e3:10.1f} {theirs * 1e3:10.1f} {theirs / ours:7.2f}x")
        if name.startswith("mnist_6 gram fit"):
            results.put("kernels_speedup_mnist_6_gram_fit", theirs / ours)
