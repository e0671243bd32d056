#!/usr/bin/env python
"""Before/after timings of single optimisations for docs/performance.md, on mnist_6's shapes.

    python scripts/perf_items.py

Glorot weights of the mnist_6 network (784-1000-800-600-400-200-10), 10,000 uniform rows,
best of three warm runs of each jitted function:

- the five backward pseudoinverses (layers 2-6) by SVD and by ``zorb.solvers.pseudoinverse``
  (its Gram route for well-conditioned matrices), once each (cached) or once per layer
  below (uncached);
- the forward from every layer to the top: what a refresh before each solve costs, and what
  skipping it saves when no softmax lies above;
- layer 2's solve (10,000 x 1,001 design, 800 targets) by forming ``pinv([A, 1]) @ T`` (the
  paper's code) against zorb's svd, qr and gram routes;
- a tanh over 10,000 x 1,000 entries and a 10,000 x 1,000 x 800 product: run the script once
  more with ``ZORB_MALLOC_TUNING=0`` to see what ``zorb.allocator`` saves on them.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import zorb  # noqa: F401  (float64)
from zorb import allocator
from zorb.solvers import _pseudoinverse_svd, lstsq_gram, lstsq_qr, lstsq_svd, pseudoinverse

SIZES = (784, 1000, 800, 600, 400, 200, 10)
ROWS = 10_000


def best(fn, repeats=3):
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    rng = np.random.default_rng(0)
    big, w = jnp.asarray(rng.random((ROWS, 1000))), jnp.asarray(rng.random((1000, 800)))
    tanh, product = jax.jit(jnp.tanh), jax.jit(jnp.matmul)
    print(f"allocator tuning {'on' if allocator.applied() else 'off'}: tanh of {ROWS:,} x 1,000 "
          f"{best(lambda: tanh(big)) * 1e3:.1f} ms, product {ROWS:,} x 1,000 x 800 {best(lambda: product(big, w)) * 1e3:.1f} ms")
    weights = [jnp.asarray(rng.uniform(-np.sqrt(6 / (a + b)), np.sqrt(6 / (a + b)), (a, b)))
               for a, b in zip(SIZES[:-1], SIZES[1:])]
    rcond = jnp.asarray(1e-15)
    by_gram, by_svd = jax.jit(pseudoinverse), jax.jit(_pseudoinverse_svd)
    above = weights[1:]
    svd_times = [best(lambda w=w: by_svd(w, rcond)) for w in above]
    gram_times = [best(lambda w=w: by_gram(w, rcond)) for w in above]
    uses = range(1, len(above) + 1)  # W_j is inverted for every parametric layer below it
    print("pseudoinverses of layers 2-6, s each: svd", [f"{t:.3f}" for t in svd_times],
          "gram route", [f"{t:.3f}" for t in gram_times])
    print(f"  cached (once each): svd {sum(svd_times):.3f} s, gram route {sum(gram_times):.3f} s; "
          f"recomputed for every layer below: svd {sum(t * u for t, u in zip(svd_times, uses)):.3f} s")

    x = jnp.asarray(rng.random((ROWS, SIZES[0])))
    inputs = [x]
    for w in weights[:-1]:
        inputs.append(jnp.tanh(inputs[-1] @ w))

    def tail(i):
        def forward(a):
            for w in weights[i:]:
                a = jnp.tanh(a @ w)
            return a
        return jax.jit(forward)

    refresh = sum(best(lambda i=i, f=tail(i): f(inputs[i])) for i in range(len(weights)))
    print(f"forward from every layer to the top (a refresh before each solve): {refresh:.3f} s in all")

    a, t = inputs[1], jnp.asarray(rng.random((ROWS, SIZES[2])))
    design = jnp.concatenate([a, jnp.ones((ROWS, 1))], axis=1)
    formed = jax.jit(lambda m, t: jnp.linalg.pinv(m, rtol=1e-15) @ t)
    routes = {name: jax.jit(lambda a, t, f=f, r=r: f(a, t, rcond=r, ridge=0.0)[0])
              for name, f, r in (("svd", lstsq_svd, 1e-15), ("qr", lstsq_qr, 1e-15), ("gram", lstsq_gram, 1e-7))}
    print(f"layer 2's solve ({ROWS:,} x {SIZES[1] + 1:,} -> {SIZES[2]}): pinv([A,1]) @ T "
          f"{best(lambda: formed(design, t)):.3f} s; " +
          ", ".join(f"{name} route {best(lambda f=f: f(a, t)):.3f} s" for name, f in routes.items()))


if __name__ == "__main__":
    main()
