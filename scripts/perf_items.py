#!/usr/bin/env python
"""Before/after timings of single optimisations for docs/performance.md, on mnist_6's shapes.

    python scripts/perf_items.py

Glorot weights of the mnist_6 network (784-1000-800-600-400-200-10), 10,000 uniform rows,
best of three warm runs of each jitted function:

- the five backward pseudoinverses (layers 2-6) by SVD and by ``zorb.core.solvers.pseudoinverse``
  (its Gram route for well-conditioned matrices), once each (cached) or once per layer
  below (uncached);
- the forward from every layer to the top: what a refresh before each solve costs, and what
  skipping it saves when no softmax lies above;
- layer 2's solve (10,000 x 1,001 design, 800 targets) by forming ``pinv([A, 1]) @ T`` (the
  paper's code) against zorb's svd, qr and gram routes;
- a tanh, ``2 * x`` (an XLA loop fusion) over 10,000 x 1,000 entries and a 10,000 x 1,000 x 800
  product: run the script once more with ``ZORB_MALLOC_TUNING=0`` to see what
  ``zorb.kernels.allocator`` saves on them;
- the products through BLAS (``zorb.kernels.products``) against XLA's own: a 10,000 x 1,000 x 800
  product, the Gram matrix and the moment ``A^T T`` of a 10,000 x 1,000 design;
- the Tanh/Sigmoid inverses (``zorb.kernels.special``) against XLA's ``arctanh`` and ``log`` of the
  odds on 10,000 x 800 entries, and a whole Tanh/Sigmoid target inverse (range map, inverse,
  the bias below subtracted) by the one-pass kernel and by XLA;
- the gram route's last step on 1,001^2 normal equations: eigenvectors against the
  eigenvalues + Cholesky it takes when nothing is cut; the eigenvalues alone by
  ``jnp.linalg.eigvalsh`` and by ``zorb.kernels.solve.eigvalsh``; a 1000 x 900 pseudoinverse by SVD, by
  the Gram matrix's eigenvectors and by its eigenvalues + Cholesky;
- the whole gram fit of mnist_6 with the products through BLAS and through XLA, alternated
  in one process (two fits each, the first compiling);
- a Tanh inverse of 10,000 x 600 entries alone and right after a 10,000 x 1,000 x 1,000
  product: run the script once more with ``ZORB_BLAS_POOL=0`` (OpenBLAS's own spinning
  threads) to see what zorb's worker pool saves;
- the gram solve's last step in one FFI call (``zorb.kernels.solve.gram_solve``) against its JAX code
  (eigenvalues, then Cholesky or ``jnp``'s eigendecomposition), nothing cut, rank 367, 120 and
  60 of 1,001;
- the Gram matrix of a 1,001 x 10,000 and a 601 x 10,000 design (one sample per column) by
  ``zorb.kernels.products.gram``: run the script once more with ``ZORB_SPLIT_GRAM=0`` to see what the
  one-thread parts save over OpenBLAS's threaded ``dsyrk``;
- the whole gram fit of mnist_6 and mnist_11 on transposed arrays (``zorb.fit``'s samples-last
  layout) against the row layout, alternated in one process;
- conv1's shapes (1,280 32x32x3 images, 32 3x3 filters): the forward by ``zorb.kernels.conv.conv2d``
  against XLA's convolution, and the gram solve's moments without the patch matrix
  (``zorb.kernels.conv.conv_moments``) against the patch matrix and BLAS;
- the global min and max of 10^7 values by ``zorb.kernels.squash.extrema`` against ``jnp.min`` and
  ``jnp.max``.
"""

import importlib
import time

from zorb.kernels.tuning import tune_process

tune_process()  # before numpy loads OpenBLAS, as run.py does

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import zorb  # noqa: E402
import zorb.core  # noqa: E402,F401  (float64)
from zorb.kernels import allocator
from zorb.kernels import conv, native, products, solve, squash
from zorb.kernels import special
from zorb.core import timing
from zorb.core.layers import Sigmoid, Tanh
from zorb.core.solvers import _pseudoinverse_svd, lstsq_gram, lstsq_qr, lstsq_svd, pseudoinverse, solve_from_gram

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
    tanh, product, scale = jax.jit(jnp.tanh), jax.jit(jnp.matmul), jax.jit(lambda a: a * 2.0)
    print(f"allocator tuning {'on' if allocator.applied() else 'off'}: tanh of {ROWS:,} x 1,000 "
          f"{best(lambda: tanh(big)) * 1e3:.1f} ms, 2 * x (an XLA loop fusion) {best(lambda: scale(big)) * 1e3:.1f} ms, "
          f"product {ROWS:,} x 1,000 x 800 {best(lambda: product(big, w)) * 1e3:.1f} ms")
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


    print_blas_and_inverses(rng)
    print_gram_solve(rng)
    print_fit_with_and_without_blas(rng, weights)
    print_inverse_after_a_product(rng)
    print_one_call_gram_solve(rng)
    print_split_gram(rng)
    print_fit_in_both_layouts(rng)
    print_conv(rng)
    print_extrema(rng)


def print_blas_and_inverses(rng):
    big, w = jnp.asarray(rng.random((ROWS, 1000))), jnp.asarray(rng.random((1000, 800)))
    t = jnp.asarray(rng.random((ROWS, 800)))
    # Arguments, not closures: XLA would fold products of constants at compile time.
    pairs = {
        f"product {ROWS:,} x 1,000 x 800": (lambda a, b, t: products.matmul(a, b), lambda a, b, t: a @ b),
        f"Gram of {ROWS:,} x 1,000": (lambda a, b, t: products.gram(a), lambda a, b, t: a.T @ a),
        f"moment A^T T, {ROWS:,} x 1,000 and x 800": (lambda a, b, t: products.matmul(a, t, transpose_a=True),
                                                     lambda a, b, t: a.T @ t),
    }
    for name, (ours, xla) in pairs.items():
        ours, xla = jax.jit(ours), jax.jit(xla)
        print(f"{name}: BLAS {best(lambda: ours(big, w, t)) * 1e3:.1f} ms, "
              f"XLA {best(lambda: xla(big, w, t)) * 1e3:.1f} ms")
    z = jnp.asarray(rng.uniform(-1 + 1e-5, 1 - 1e-5, (ROWS, 800)))
    p = (z + 1) / 2
    inverses = {
        "atanh": (special.atanh, jnp.arctanh, z),
        "logit": (special.logit, lambda p: jnp.log(p / (1 - p)), p),
    }
    for name, (ours, xla, arg) in inverses.items():
        ours, xla = jax.jit(ours), jax.jit(xla)
        print(f"{name} of {ROWS:,} x 800 entries: zorb.kernels.special {best(lambda: ours(arg)) * 1e3:.1f} ms, "
              f"XLA {best(lambda: xla(arg)) * 1e3:.1f} ms")
    # The whole Tanh/Sigmoid inverse of a target (range map, atanh/logit, the bias of the dense
    # layer below subtracted): the one-pass kernel against the same arithmetic in XLA.
    target, bias = jnp.asarray(rng.normal(size=(ROWS, 1000)) * 3), jnp.asarray(rng.normal(size=1000))
    for cls in (Tanh, Sigmoid):
        layer = cls.build((1000,), jax.random.key(0), jnp.float64).with_range(jnp.min(target), jnp.max(target))
        kernel = jax.jit(lambda t, b, layer=layer: layer.inverse_in_range(t, b))
        xla = jax.jit(lambda t, b, layer=layer: layer._inverse_in_range(t) - b)
        print(f"{cls.kind} inverse of a {ROWS:,} x 1,000 target, bias below subtracted: one-pass kernel "
              f"{best(lambda: kernel(target, bias)) * 1e3:.1f} ms, XLA {best(lambda: xla(target, bias)) * 1e3:.1f} ms")


def print_gram_solve(rng):
    """Normal equations of a 10,000 x 1,001 tanh design, 800 targets, nothing cut at 1e-7."""
    a = np.hstack([np.tanh(rng.standard_normal((ROWS, 1000))), np.ones((ROWS, 1))])
    t = rng.standard_normal((ROWS, 800))
    gram, moment = jnp.asarray(a.T @ a), jnp.asarray(a.T @ t)

    def by_eigenvectors(gram, moment):
        values, v = jnp.linalg.eigh(gram)
        return v @ ((1 / values)[:, None] * (v.T @ moment))

    ours = jax.jit(lambda g, m: solve_from_gram(g, m, ROWS, 1e-7, 0.0)[0])
    eigen = jax.jit(by_eigenvectors)
    gap = float(jnp.linalg.norm(ours(gram, moment) - eigen(gram, moment)) / jnp.linalg.norm(eigen(gram, moment)))
    print(f"gram solve (1,001^2, 800 targets, nothing cut): eigenvectors {best(lambda: eigen(gram, moment)):.3f} s, "
          f"eigenvalues + Cholesky {best(lambda: ours(gram, moment)):.3f} s (relative difference {gap:.1e})")
    values_jax, values_lapack = jax.jit(jnp.linalg.eigvalsh), jax.jit(solve.eigvalsh)
    print(f"eigenvalues of the 1,001^2 Gram matrix: jnp.linalg.eigvalsh (computes the eigenvectors too) "
          f"{best(lambda: values_jax(gram)) * 1e3:.1f} ms, zorb.kernels.solve.eigvalsh (dsyevd, no eigenvectors) "
          f"{best(lambda: values_lapack(gram)) * 1e3:.1f} ms")
    # A Glorot 1000 x 900 weight matrix's pseudoinverse: the previous Gram route (eigenvectors)
    # against the current one (eigenvalues decide, Cholesky solves) and the SVD.
    limit = np.sqrt(6 / 1900)
    w = jnp.asarray(rng.uniform(-limit, limit, (1000, 900)))

    def by_gram_eigenvectors(m):
        values, v = jnp.linalg.eigh(products.gram(m))
        return products.matmul(products.matmul(v / values, v, transpose_b=True), m, transpose_b=True)

    routes = {"SVD": jax.jit(lambda m: _pseudoinverse_svd(m, 1e-15)), "Gram eigenvectors": jax.jit(by_gram_eigenvectors),
              "Gram eigenvalues + Cholesky (zorb)": jax.jit(lambda m: pseudoinverse(m, 1e-15))}
    print("pseudoinverse of a Glorot 1000 x 900 matrix: " +
          ", ".join(f"{name} {best(lambda f=f: f(w)) * 1e3:.1f} ms" for name, f in routes.items()))


def print_fit_with_and_without_blas(rng, weights):
    if not native.NATIVE:
        print("whole fit: zorb.kernels.native is off (ZORB_NATIVE_BLAS=0 or the extension is not built)")
        return
    specs = []
    for units in SIZES[1:-1]:
        specs += [{"type": "dense", "units": units}, {"type": "tanh"}]
    specs += [{"type": "dense", "units": SIZES[-1]}, {"type": "softmax"}]
    x = rng.random((ROWS, SIZES[0]))
    y = np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], ROWS)]
    net = zorb.build_network(specs, (SIZES[0],), output_dim=SIZES[-1], seed=0)
    seconds = {True: [], False: []}
    for _ in range(2):
        for on in (True, False):
            native.NATIVE = on  # read when a function is traced: start from empty caches
            jax.clear_caches()
            timing.clear()
            zorb.fit(net, x, y, solver="gram", rcond=1e-7)
            seconds[on].append(zorb.fit(net, x, y, solver="gram", rcond=1e-7)[1].fit_seconds)
    native.NATIVE = True
    jax.clear_caches()  # the XLA route's executables would otherwise serve the items below
    timing.clear()
    print("mnist_6 gram fit (warm, s, two rounds): products through BLAS",
          [f"{s:.2f}" for s in seconds[True]], "through XLA", [f"{s:.2f}" for s in seconds[False]])



def print_inverse_after_a_product(rng):
    a, w = jnp.asarray(rng.random((ROWS, 1000))), jnp.asarray(rng.random((1000, 1000)))
    t = jnp.asarray(rng.uniform(-0.9, 0.9, (ROWS, 600)))
    layer = Tanh.build((600,), None, jnp.float64).with_range(jnp.asarray(-0.9), jnp.asarray(0.9))
    product, inverse = jax.jit(products.matmul), jax.jit(layer.inverse_in_range)

    def after():
        product(a, w).block_until_ready()
        start = time.perf_counter()
        inverse(t).block_until_ready()
        return time.perf_counter() - start

    after()
    print(f"Tanh inverse of 10,000 x 600 entries (OpenBLAS's jobs on "
          f"{'zorb' if native.SHARED_POOL else 'its own'} threads): alone {best(lambda: inverse(t)) * 1e3:.1f} ms, "
          f"right after a 10,000 x 1,000 x 1,000 product {min(after() for _ in range(3)) * 1e3:.1f} ms")


def print_one_call_gram_solve(rng):
    from zorb.core.solvers import _solve_from_gram_xla

    rcond, ridge = jnp.asarray(1e-7), jnp.asarray(0.0)
    for rank in (1001, 367, 120, 60):
        m = rng.standard_normal((3000, rank)) @ rng.standard_normal((rank, 1001)) / 30
        gram, moment = jnp.asarray(m.T @ m), jnp.asarray(m.T @ rng.standard_normal((3000, 800)))
        xla = jax.jit(lambda g, b: _solve_from_gram_xla(g, b, rcond, ridge))
        one = jax.jit(lambda g, b: solve.gram_solve(g, b, rcond, ridge,
                                                   reference=lambda g, b: _solve_from_gram_xla(g, b, rcond, ridge)))
        print(f"gram solve of 1,001^2 normal equations, rank {rank}, 800 targets: its JAX code "
              f"{best(lambda: xla(gram, moment)) * 1e3:.1f} ms, one FFI call {best(lambda: one(gram, moment)) * 1e3:.1f} ms")


def print_split_gram(rng):
    from zorb.kernels import _native

    gram = jax.jit(lambda a: products.gram(a, rows=True))
    rates = []
    for d in (1001, 601):
        a = jnp.asarray(rng.standard_normal((d, ROWS)))  # the transposed layout's design, one sample per column
        rates.append(f"{d:,} x {ROWS:,}: {d * d * ROWS / best(lambda: gram(a)) / 1e9:.0f} GFLOP/s")
    print(f"Gram matrix (dsyrk) in {_native.gram_parts(1001, ROWS)} part(s) (ZORB_SPLIT_GRAM=0 for OpenBLAS's threaded "
          f"call): " + ", ".join(rates))


def print_fit_in_both_layouts(rng):
    fit_module = importlib.import_module("zorb.core.fit")
    threshold = fit_module.SAMPLES_LAST_MIN_ROWS
    x = rng.random((ROWS, SIZES[0]))
    y = np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], ROWS)]
    for name, hidden in (("mnist_6", SIZES[1:-1]), ("mnist_11", (1000, 900, 800, 700, 600, 500, 400, 300, 200, 100))):
        specs = [spec for units in hidden for spec in ({"type": "dense", "units": units}, {"type": "tanh"})]
        net = zorb.build_network(specs + [{"type": "dense", "units": 10}, {"type": "softmax"}], (SIZES[0],),
                                 output_dim=10, seed=0)
        seconds = {"samples last": [], "rows": []}
        for _ in range(2):
            for layout, rows in (("samples last", threshold), ("rows", ROWS + 1)):
                fit_module.SAMPLES_LAST_MIN_ROWS = rows
                zorb.fit(net, x, y, solver="gram", rcond=1e-7)
                seconds[layout].append(zorb.fit(net, x, y, solver="gram", rcond=1e-7)[1].fit_seconds)
        fit_module.SAMPLES_LAST_MIN_ROWS = threshold
        print(f"{name} gram fit (warm, s, two rounds): " +
              ", ".join(f"{layout} {[f'{s:.2f}' for s in values]}" for layout, values in seconds.items()))


def print_conv(rng):
    from zorb.core.layers.conv2d import extract_patches
    from zorb.core.solvers import gram_moments

    x = jnp.asarray(rng.random((1280, 32, 32, 3)))
    kernel, bias = jnp.asarray(rng.standard_normal((3, 3, 3, 32))), jnp.asarray(rng.standard_normal(32))
    t = jnp.asarray(rng.standard_normal((1280, 30, 30, 32)))
    ours, xla = jax.jit(lambda x: conv.conv2d(x, kernel, 1, bias)), jax.jit(lambda x: conv.jax_conv2d(x, kernel, 1, bias))

    def patch_moments(x, t):
        patches = extract_patches(x, 3, 1)
        return gram_moments(patches.reshape(-1, 27), t.reshape(-1, 32), bias=True)

    fused = jax.jit(lambda x, t: conv.conv_moments(x, t, 3, 1, reference=patch_moments))
    print(f"conv1 forward (1,280 32x32x3 images, 32 3x3 filters): XLA {best(lambda: xla(x)) * 1e3:.1f} ms, "
          f"zorb.kernels.conv.conv2d {best(lambda: ours(x)) * 1e3:.1f} ms; its gram solve's moments: patch matrix + BLAS "
          f"{best(lambda: jax.jit(patch_moments)(x, t)) * 1e3:.1f} ms, without the patch matrix "
          f"{best(lambda: fused(x, t)) * 1e3:.1f} ms")



def print_extrema(rng):
    x = jnp.asarray(rng.standard_normal((1000, ROWS)))
    one, two = jax.jit(squash.extrema), jax.jit(lambda x: (jnp.min(x), jnp.max(x)))
    print(f"global min and max of 10^7 values: jnp.min + jnp.max {best(lambda: two(x)) * 1e3:.1f} ms, "
          f"zorb.kernels.squash.extrema (one pass) {best(lambda: one(x)) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
