#!/usr/bin/env python
"""Benchmark ZORB on the paper's shapes: fit time per solver against this machine's
flop-bound limit, peak memory, and Adam's time to the same training error.

    python scripts/bench.py                  # GEMM rate, mnist_6 + mnist_11 on 10,000 rows, conv1 on 1,280 images, Adam
    python scripts/bench.py --quick          # every section at tiny sizes (under two minutes)
    python scripts/bench.py --memory         # mnist_6 on 1,000,000 uint8 rows streamed with chunk_rows
    python scripts/bench.py --memory --rows 100000
    python scripts/bench.py --paper-shapes   # the authors' shapes: mnist_6 on 60,000 rows, conv 8 kernels on 1,000 28x28 images
    python scripts/bench.py --threads        # OpenBLAS / XLA thread settings, each in a fresh process

Every measurement runs in a fresh Python subprocess (``--worker``), so its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss`` of that process) is its own and the thread settings
of the environment apply from the first import. Each ZORB configuration is fitted once to
compile (its compile time is reported), then timed on ``--warm-fits`` warm fits (default 5):
the best is reported, and the first beside it (the first warm fits still grow the heap: page
faults, costly on a virtual machine).

Flops are counted from the shapes (see ``fit_flops``): what the in-memory fit does
(forward refreshes, layer forwards, backward target products and pseudoinverses) with each
solve counted at the cheapest exact route's cost (a Gram matrix of the design matrix, its
moment with the target, and a small eigendecomposition). ``limit_ratio`` = fit time /
(flops / measured float64 GEMM rate): 1.0 would mean every flop ran at GEMM speed. The rate
is measured in the fits' own worker, after each warm fit (the best of those samples), so that
both come from the same minutes: on a shared virtual machine the speed of both drifts by up
to 30% within a run. ``limit_ratio_first_rate`` takes the rate of the run's first section
instead.

Inputs are random with MNIST's / CIFAR's shapes unless ``--dataset`` names real data: a
ZORB fit's cost depends on shapes, not values (Adam's time to an error does depend on them).
The LAST line is machine-readable ``key=value`` pairs (all values numeric).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

# ---------------------------------------------------------------------------------------------
# Networks and settings
# ---------------------------------------------------------------------------------------------

HIDDEN = {
    "mnist_6": (1000, 800, 600, 400, 200),
    "mnist_11": (1000, 900, 800, 700, 600, 500, 400, 300, 200, 100),
}
ADAM_LR = {"mnist_6": 1e-3, "mnist_11": 5e-4, "conv1": 1e-3}
"""The paper's Adam learning rates (PAPER_EXPERIMENTS.md, groups B and C)."""

RCOND = {"svd": 1e-15, "qr": 1e-15, "gram": 1e-7}
"""The paper's feed-forward rcond for svd/qr; gram squares the condition number, so float64
honours nothing below ~7.5e-8 (``zorb.core.solvers.gram_min_rcond``): 1e-7."""
CONV_RCOND = 1e-2
"""The paper's single-conv-layer CNN runs (conv1) used rcond 1e-2."""
CLASSES = 10


def dense_specs(hidden, activation="tanh"):
    specs = []
    for units in hidden:
        specs += [{"type": "dense", "units": units}, {"type": activation}]
    return specs + [{"type": "dense", "units": CLASSES}, {"type": "softmax"}]


def conv_specs(filters):
    return [{"type": "conv2d", "filters": filters, "kernel_size": 3}, {"type": "sigmoid"}, {"type": "flatten"},
            {"type": "dense", "units": CLASSES}, {"type": "softmax"}]


def network_specs(name: str):
    if name in HIDDEN:
        return dense_specs(HIDDEN[name])
    if name == "conv1":
        return conv_specs(32)
    if name == "conv8":
        return conv_specs(8)
    raise SystemExit(f"unknown network {name!r}: choose from {', '.join([*HIDDEN, 'conv1'])}")


# ---------------------------------------------------------------------------------------------
# Flop model (pure Python, from the shapes)
# ---------------------------------------------------------------------------------------------

def layer_plan(specs, input_shape):
    """Per layer: kind, in/out shapes and, for dense/conv2d, rows per sample (output
    positions), d (fan-in + bias column) and k (outputs). Mirrors zorb's shape rules."""
    shape, plan = tuple(input_shape), []
    for spec in specs:
        kind = spec["type"]
        entry = {"kind": kind, "in_shape": shape}
        if kind == "dense":
            entry.update(positions=1, d=shape[0] + 1, k=spec["units"])
            shape = (spec["units"],)
        elif kind == "conv2d":
            k = spec["kernel_size"]
            h, w, c = shape
            shape = (h - k + 1, w - k + 1, spec["filters"])
            entry.update(positions=shape[0] * shape[1], d=k * k * c + 1, k=spec["filters"], kernel=k)
        elif kind == "flatten":
            shape = (math.prod(shape),)
        entry["out_shape"] = shape
        entry["parametric"] = kind in ("dense", "conv2d")
        plan.append(entry)
    return plan


def svd_flops(m: int, n: int) -> float:
    """Thin SVD with both singular-vector sets of an m x n matrix (a >= b its sides):
    4ab^2 + 8b^3 (Householder bidiagonalisation 4ab^2 - 4b^3/3, forming the vectors and the
    bidiagonal SVD ~ 9b^3; a model: LAPACK's gesdd does about this)."""
    a, b = max(m, n), min(m, n)
    return 4.0 * a * b * b + 8.0 * b ** 3


def eigh_flops(n: int) -> float:
    """Symmetric eigendecomposition with vectors (LAPACK syevd): tridiagonal reduction 4n^3/3,
    back-transformation 2n^3, divide and conquer ~2n^3/3: 4n^3 (a model)."""
    return 4.0 * n ** 3


def gemm(m, n, k) -> float:
    return 2.0 * m * n * k


def cheapest_solve_flops(rows: int, d: int, k: int) -> dict:
    """The cheapest exact least-squares route with an rcond cut, for a rows x d design and
    a rows x k target: the Gram matrix on the smaller side (symmetric: rows*d^2 flops for
    rows >= d, rows^2*d otherwise), the moment [A,1]^T T (2*rows*d*k), an eigendecomposition
    of the small Gram and applying it (two products with its eigenvectors)."""
    small = min(rows, d)
    return {"gram": float(small) * small * max(rows, d), "moment": gemm(rows, d, k),
            "small": eigh_flops(small) + 2 * gemm(small, small, k)}


def route_solve_flops(solver: str, rows: int, d: int, k: int) -> float:
    """What each zorb solver's route does, for comparison with the cheapest route."""
    if solver == "gram":
        return sum(cheapest_solve_flops(rows, d, k).values())
    if solver == "qr":
        if rows < d:  # wide: QR of [A, 1]^T (R only), an SVD of the rows x rows triangle, [A, 1]^T x
            return 2.0 * d * rows * rows - 2.0 * rows ** 3 / 3 + svd_flops(rows, rows) + 2 * gemm(rows, rows, k) \
                + gemm(d, rows, k)
        # Householder QR of [A, 1, T] (R only), then an SVD of the small triangle
        c = d + k
        qr = 2.0 * rows * c * c - 2.0 * c ** 3 / 3 if rows >= c else 2.0 * rows * rows * c - 2.0 * rows ** 3 / 3
        return qr + svd_flops(d, d) + 2 * gemm(d, d, k)
    # svd: thin SVD of [A, 1] with U (rows x d), then V diag(f) U^T T
    t = min(rows, d)
    return svd_flops(rows, d) + gemm(t, rows, k) + gemm(d, t, k)


def fit_flops(plan, n: int, solver: str = "gram") -> dict:
    """Flops of the in-memory fit (``zorb.core.fit._fit_in_memory``) on n samples, by stage.

    - refresh: before each parametric layer's solve, the forward pass from that layer to
      the top (a softmax above needs its normalisers for the current input);
    - forward: each parametric layer's forward with its solved weights (not the last);
    - pinv: each backward pseudoinverse pinv(W'), once per layer above the first;
    - targets: (T - b) @ pinv(W') for every parametric layer above the one being solved,
      plus col2im's additions for a conv layer inverted on the way;
    - solve: the cheapest exact route (``cheapest_solve_flops``) per parametric layer.
    Elementwise activations, their inverses and patch extraction are memory traffic, not
    counted. Per-layer figures are in ``layers`` (keyed by the 1-based layer index), with
    ``route_solve``: what ``solver`` does for that solve.
    """
    params = [i for i, e in enumerate(plan) if e["parametric"]]
    observed = [any(e["kind"] == "softmax" for e in plan[i + 1:]) for i in range(len(plan))]

    def forward(i):
        e = plan[i]
        return gemm(n * e["positions"], e["d"], e["k"])

    def backward(j):
        e = plan[j]
        rows = n * e["positions"]
        flops = gemm(rows, e["k"], e["d"] - 1)
        if e["kind"] == "conv2d":  # col2im: every patch entry added back, then the averaging division
            flops += rows * (e["d"] - 1) + n * math.prod(e["in_shape"])
        return flops

    totals = dict.fromkeys(("refresh", "forward", "pinv", "targets", "solve_gram", "solve_moment",
                            "solve_small"), 0.0)
    layers, prepared = {}, set()
    for i in params:
        e = plan[i]
        own = dict.fromkeys(("forward", "targets", "solve"), 0.0)
        if observed[i]:
            own["forward"] += sum(forward(j) for j in params if j >= i)
            totals["refresh"] += sum(forward(j) for j in params if j >= i)
        for j in params:
            if j > i and j not in prepared:
                prepared.add(j)
                m, k = plan[j]["d"] - 1, plan[j]["k"]
                pinv = svd_flops(m, k) + gemm(min(m, k), min(m, k), max(m, k))
                totals["pinv"] += pinv
                own["targets"] += pinv
        back = sum(backward(j) for j in params if j > i)
        totals["targets"] += back
        own["targets"] += back
        rows = n * e["positions"]
        solve = cheapest_solve_flops(rows, e["d"], e["k"])
        for key, value in solve.items():
            totals[f"solve_{key}"] += value
        own["solve"] = sum(solve.values())
        own["route_solve"] = route_solve_flops(solver, rows, e["d"], e["k"])
        if i != params[-1]:
            totals["forward"] += forward(i)
            own["forward"] += forward(i)
        layers[i + 1] = own
    totals["total"] = sum(totals.values())
    totals["layers"] = layers
    return totals


def conv_layer_bytes(plan, n: int, index: int) -> float:
    """The least memory traffic of the in-memory fit's step for the conv layer at ``index``
    (0-based), float64, each array written once and read once: its patch matrix (written,
    read by the solve), the target rows the solve reads, its forward twice (the refresh and
    the forward with the solved weights: input read, output written), the refresh through
    every layer above (input read, output written) and the backward targets through them
    (each layer's target written and read). What XLA or a hand-written kernel could fuse
    away (the patch matrix, the activations' intermediates) is still counted once."""
    e = plan[index]
    rows = n * e["positions"]
    size = lambda shape: n * math.prod(shape)  # noqa: E731
    total = 2 * rows * (e["d"] - 1)              # patches: written, then read by the solve
    total += rows * e["k"]                        # target rows read by the solve
    total += 2 * (size(e["in_shape"]) + rows * e["k"])  # two forwards of the conv layer
    above = plan[index + 1:]
    if any(a["kind"] == "softmax" for a in above):
        total += sum(size(a["in_shape"]) + size(a["out_shape"]) for a in above if a["kind"] != "flatten")
    total += sum(2 * size(a["in_shape"]) for a in above if a["kind"] != "flatten")
    return 8.0 * total


def chunked_fit_flops(plan, n: int, solver: str) -> float:
    """Flops of the streamed fit (``zorb.core.fit._fit_chunked``): every pass over the rows
    recomputes the layer input from X through all trained layers below; per parametric layer
    one observation pass (forward to the top), one range pass per Sigmoid/Tanh above (targets
    from the top down to it) and one accumulation pass (targets + the solver's accumulation)."""
    params = [i for i, e in enumerate(plan) if e["parametric"]]
    squash = [i for i, e in enumerate(plan) if e["kind"] in ("sigmoid", "tanh")]

    def forward(i):
        e = plan[i]
        return gemm(n * e["positions"], e["d"], e["k"])

    def targets_to(j):
        return sum(gemm(n * plan[p]["positions"], plan[p]["k"], plan[p]["d"] - 1) for p in params if p > j)

    total = 0.0
    for i in params:
        below = sum(forward(p) for p in params if p < i)
        if any(e["kind"] == "softmax" for e in plan[i + 1:]):
            total += below + sum(forward(p) for p in params if p >= i)
        for j in squash:
            if j > i:
                total += below + targets_to(j)
        e = plan[i]
        rows = n * e["positions"]
        total += below + targets_to(i)
        if solver == "qr":
            c = e["d"] + e["k"]
            total += 2.0 * rows * c * c + svd_flops(e["d"], e["d"])
        else:
            total += sum(cheapest_solve_flops(rows, e["d"], e["k"]).values())
    for j in params[1:]:
        m, k = plan[j]["d"] - 1, plan[j]["k"]
        total += svd_flops(m, k) + gemm(min(m, k), min(m, k), max(m, k))
    return total


# ---------------------------------------------------------------------------------------------
# Workers: each runs in its own process
# ---------------------------------------------------------------------------------------------

RESULT_PREFIX = "BENCH_RESULT "


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def current_rss_gib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except OSError:
        return float("nan")


def make_data(cfg):
    """(X, Y) float64 for a worker: random uniform inputs with one-hot random classes, or a
    real dataset through ``zorb.data.load_dataset``. The same cfg gives the same arrays."""
    import numpy as np

    n, shape = cfg["rows"], tuple(cfg["shape"])
    if cfg.get("dataset", "random") != "random":
        from zorb.data import load_dataset

        data = load_dataset(cfg["dataset"], data_dir=cfg["data_dir"], seed=cfg["seed"], train_samples=n,
                            flatten=len(shape) == 1)
        return data.x_train, data.y_train
    rng = np.random.default_rng(cfg["seed"])
    x = rng.random((n, *shape))
    y = np.eye(CLASSES)[rng.integers(0, CLASSES, n)]
    return x, y


def eval_subset(n: int, eval_rows: int | None, seed: int):
    """The rows ``zorb.baselines.train_adam`` evaluates its curve on (same draw), or None for all."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from zorb.baselines.adam import _EVAL_STREAM

    if eval_rows is None or eval_rows >= n:
        return None
    key = jax.random.fold_in(jax.random.key(seed), _EVAL_STREAM)
    return np.asarray(jnp.sort(jax.random.permutation(key, n)[:eval_rows]))


def train_errors(network, x, y, eval_rows, seed):
    import numpy as np
    import zorb

    pred = zorb.predict(network, x, batch_size=5000)
    full = zorb.scores(pred, y, task="regression")["error"]
    rows = eval_subset(len(x), eval_rows, seed)
    sub = full if rows is None else zorb.scores(pred[rows], np.asarray(y)[rows], task="regression")["error"]
    accuracy = float(np.mean(pred.argmax(axis=1) == np.asarray(y).argmax(axis=1)))
    return full, sub, accuracy


def layer_rows(report, cold=None):
    """Per-layer stage seconds of ``report``; compile seconds from ``cold`` (the first fit) if given."""
    compile_seconds = {r.index: r.compile_seconds for r in (cold or report).layers}
    return [{"index": r.index, "kind": r.kind, "design": list(r.design_shape), "solve": r.solve_seconds,
             "target": r.target_seconds, "forward": r.forward_seconds, "compile": compile_seconds[r.index],
             "rank": r.rank, "cond": r.cond} for r in report.layers]


def work_gemm(cfg):
    import numpy as np
    import jax
    import jax.numpy as jnp
    from zorb.kernels import native, products
    from zorb.kernels import cpu

    n, repeats = cfg["size"], cfg["repeats"]
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)), rng.random((n, n))
    flops = 2.0 * n ** 3

    def best(fn, work=flops, warmups=1):
        for _ in range(warmups):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return work / min(times) / 1e9

    numpy_rate = best(lambda: a @ b)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(jnp.dot)
    xla_rate = best(lambda: dot(ja, jb).block_until_ready())
    # What the fit's products run at: zorb.kernels.products (dgemm through an XLA FFI call) when it is on.
    product = jax.jit(products.matmul)
    zorb_rate = best(lambda: product(ja, jb).block_until_ready())
    # Memory bandwidth: XLA reading and writing a 256 MiB float64 array once (bytes read + written).
    # Warm-up calls until the heap holds enough freed blocks for the outputs: XLA frees a buffer
    # a little after its last use, so the first few outputs land on fresh pages, and a page
    # fault costs several microseconds on a virtual machine (1.1 GB/s measured with one warm-up
    # call, 25 GB/s from the fourth on).
    big = jnp.ones((2 ** 25,), jnp.float64)
    scale = jax.jit(lambda v: v * 2.0)
    stream = best(lambda: scale(big).block_until_ready(), work=2 * big.nbytes, warmups=6)
    return {"numpy_gflops": numpy_rate, "xla_gflops": xla_rate, "zorb_gflops": zorb_rate, "blas": native.NATIVE,
            "gemm_native": native.GEMM_NATIVE, "shared_pool": native.SHARED_POOL, "size": n, "stream_gbs": stream, "cores": native.openblas_cores(),
            "wide_kernels": native.wide_kernels(native.openblas_cores().get("scipy")), "avx512": cpu.has_avx512(), "coretype_env": os.environ.get("OPENBLAS_CORETYPE")}


def gemm_sampler(size: int):
    """A function that measures this machine's float64 GEMM rate now (GFLOP/s): one
    ``size``^3 product each with numpy's OpenBLAS, XLA's dot and ``zorb.kernels.products.matmul``
    (SciPy's OpenBLAS, what the fits run), the fastest of them, as in the GEMM section. The
    matrices are made on the first call."""
    import numpy as np
    import jax
    from zorb.kernels import products

    state = {}

    def sample() -> float:
        if not state:
            rng = np.random.default_rng(0)
            a, b = rng.random((size, size)), rng.random((size, size))
            state.update(a=a, b=b, ja=jax.numpy.asarray(a), jb=jax.numpy.asarray(b), product=jax.jit(products.matmul),
                         dot=jax.jit(jax.numpy.dot))
            for name in ("product", "dot"):  # compiles
                state[name](state["ja"], state["jb"]).block_until_ready()
        best = math.inf
        for fn in (lambda: state["a"] @ state["b"], lambda: state["product"](state["ja"], state["jb"]).block_until_ready(),
                   lambda: state["dot"](state["ja"], state["jb"]).block_until_ready()):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return 2.0 * size ** 3 / best / 1e9

    return sample


def work_zorb(cfg):
    """Fit once to compile, then time the warm fits, for each entry of ``cfg["runs"]`` (one
    solver each; several share this process, and so its peak RSS, in quick mode)."""
    import zorb

    x, y = make_data(cfg)
    specs = network_specs(cfg["network"])
    net = zorb.build_network(specs, x.shape[1:], output_dim=y.shape[1], seed=cfg["seed"])
    rss_before = current_rss_gib()
    sample_gemm = gemm_sampler(cfg.get("gemm_size", 4000))
    out = {}
    for run in cfg["runs"]:
        options = dict(solver=run["solver"], rcond=run["rcond"])
        start = time.perf_counter()
        _, cold = zorb.fit(net, x, y, **options)
        cold_wall = time.perf_counter() - start
        # Warm fits: the first ones still grow the process's heap to its working set (fresh pages
        # fault, and a page fault costs ~10 us on a virtual machine); the best of them is the
        # steady state a sweep's worker process reaches. After each one, a GEMM-rate sample
        # (the fit's peak RSS is read before the first, so the sample's matrices stay out of it).
        walls, rates, peak = [], [], None
        for _ in range(cfg.get("warm_fits", 1)):
            start = time.perf_counter()
            trained, report = zorb.fit(net, x, y, **options)
            walls.append(time.perf_counter() - start)
            if walls[-1] == min(walls):
                warm = report
            else:
                del report
            peak = peak_rss_gib() if peak is None else peak
            rates.append(sample_gemm())
        wall = min(walls)
        full, sub, accuracy = train_errors(trained, x, y, cfg.get("eval_rows"), cfg["seed"])
        out[run["solver"]] = {
            "fit_seconds": wall, "first_warm_seconds": walls[0], "warm_fits": len(walls),
            "report_fit_seconds": warm.fit_seconds, "warm_compile_seconds": warm.compile_seconds,
            "compile_seconds": cold.compile_seconds, "cold_wall_seconds": cold_wall, "train_error": full,
            "train_error_eval_rows": sub, "train_accuracy": accuracy, "layers": layer_rows(warm, cold),
            "rss_before_fit_gib": rss_before, "peak_rss_gib": peak, "gemm_samples": rates}
        del trained
    return out


def work_adam(cfg):
    from zorb.baselines.adam import speedup, train_adam
    import zorb

    x, y = make_data(cfg)
    specs = network_specs(cfg["network"])
    net = zorb.build_network(specs, x.shape[1:], output_dim=y.shape[1], seed=cfg["seed"])
    steps = cfg["steps"]
    _, report = train_adam(net, x, y, learning_rate=cfg["lr"], steps=steps, loss=cfg["loss"], seed=cfg["seed"],
                           eval_every=max(1, steps // cfg["curve_points"]), eval_rows=cfg["eval_rows"])
    out = {"fit_seconds": report.fit_seconds, "compile_seconds": report.compile_seconds,
           "final_error": report.final_error, "steps": steps, "curve": report.curve, "targets": {}}
    for solver, (zorb_seconds, zorb_error) in cfg["targets"].items():
        reached = report.time_to_reach(zorb_error)
        out["targets"][solver] = {"reached_seconds": reached, "speedup": speedup(report, zorb_seconds, zorb_error),
                                  "reached_step": next((s for s, _, e in report.curve if e <= zorb_error), None)}
    out["peak_rss_gib"] = peak_rss_gib()
    return out


class Uint8Rows:
    """MNIST-like rows held as uint8 pixels; slicing gives float64 in [0, 1] (what
    ``zorb.fit(chunk_rows=...)`` reads chunk by chunk: ``np.asarray(X[start:stop])``)."""

    def __init__(self, pixels):
        self.pixels = pixels

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, index):
        import numpy as np

        return np.multiply(self.pixels[index], 1 / 255.0, dtype=np.float64)


class OneHotRows:
    """One-hot rows from uint8 labels, built per slice."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        import numpy as np

        return np.eye(CLASSES)[self.labels[index]]


def work_memory(cfg):
    import numpy as np
    import zorb

    rows, chunk = cfg["rows"], cfg["chunk_rows"]
    rng = np.random.default_rng(cfg["seed"])
    pixels = np.frombuffer(rng.bytes(rows * 784), dtype=np.uint8).reshape(rows, 784)
    labels = rng.integers(0, CLASSES, rows).astype(np.uint8)
    x, y = Uint8Rows(pixels), OneHotRows(labels)
    net = zorb.build_network(network_specs("mnist_6"), (784,), output_dim=CLASSES, seed=cfg["seed"])
    options = dict(solver=cfg["solver"], rcond=RCOND[cfg["solver"]], chunk_rows=chunk)
    rss_before = current_rss_gib()
    warm_rows = min(rows, 2 * chunk)  # compiles every per-chunk stage; the full fit reuses them
    start = time.perf_counter()
    _, cold = zorb.fit(net, Uint8Rows(pixels[:warm_rows]), OneHotRows(labels[:warm_rows]), **options)
    warmup_wall = time.perf_counter() - start
    start = time.perf_counter()
    trained, report = zorb.fit(net, x, y, **options)
    wall = time.perf_counter() - start
    sample = slice(0, min(rows, 10_000))
    pred = zorb.predict(trained, x[sample])
    error = zorb.scores(pred, y[sample], task="regression")["error"]
    return {"fit_seconds": report.fit_seconds, "wall_seconds": wall, "compile_seconds": report.compile_seconds,
            "warmup_compile_seconds": cold.compile_seconds, "warmup_wall_seconds": warmup_wall,
            "train_error_first_10k": error, "layers": layer_rows(report), "rss_before_fit_gib": rss_before,
            "x_bytes_gib": pixels.nbytes / 2 ** 30, "peak_rss_gib": peak_rss_gib()}


WORKERS = {"gemm": work_gemm, "zorb": work_zorb, "adam": work_adam, "memory": work_memory}


def worker_main(text: str) -> None:
    from zorb.kernels.tuning import tune_process

    tune_process()  # before anything loads OpenBLAS: zorb.kernels.cpu picks its kernels

    cfg = json.loads(text)
    if cfg.get("openblas_limit"):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=cfg["openblas_limit"], user_api="blas")
    result = WORKERS[cfg["task"]](cfg)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------

def busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have spent busy (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


WORKER_ENV: dict[str, str | None] = {}
"""Changes to every worker's environment (None removes a variable): ``--openblas-coretype``."""

OTHER_LOAD: list[float] = []
"""Cores used by other processes while each worker ran (machine busy time less our workers')."""


def run_worker(cfg, env_extra=None, timeout=None):
    """Run one measurement in a fresh process; also records how many cores other processes
    kept busy meanwhile (timings are only comparable when that is near 0)."""
    env = dict(os.environ)
    env.update(WORKER_ENV)
    env.update(env_extra or {})
    env = {k: v for k, v in env.items() if v is not None}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    busy, mine, wall = busy_seconds(), children_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - wall
    if busy is not None:
        other = (busy_seconds() - busy - (children_cpu_seconds() - mine)) / wall
        OTHER_LOAD.append(max(0.0, other))
        print(f"  [worker {cfg['task']}: {wall:.0f} s; other processes kept {max(0.0, other):.2f} cores busy]",
              flush=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"bench worker {cfg['task']} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def load_text() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def fmt_flops(flops: float) -> str:
    return f"{flops / 1e9:,.1f} GFLOP"


def section(title: str) -> None:
    print(f"\n== {title} ==  (load average {load_text()})", flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.keys: dict[str, float] = {}
        self.gemm_rate = self.xla_rate = None  # GFLOP/s
        self.stream_rate = None  # GB/s

    def put(self, key, value, digits=4):
        if value is None or not math.isfinite(float(value)):
            return
        self.keys[key] = float(f"{float(value):.{digits}g}")

    # ---- GEMM -------------------------------------------------------------------------------
    def gemm(self):
        size = 1000 if self.args.quick else 4000
        section(f"float64 GEMM rate ({size}x{size} @ {size}x{size}, warm, best of 3; 2*m*n*k flops)")
        r = run_worker({"task": "gemm", "size": size, "repeats": 3})
        self.gemm_rate = max(r["numpy_gflops"], r["xla_gflops"], r["zorb_gflops"])
        self.xla_rate = r["xla_gflops"]
        route = ("XLA: zorb.kernels.native is off" if not r["blas"] else "dgemm via XLA FFI" if r["gemm_native"]
                 else "XLA's dot: faster than these OpenBLAS kernels")
        print(f"numpy (OpenBLAS): {r['numpy_gflops']:.1f} GFLOP/s   XLA jnp.dot: {r['xla_gflops']:.1f} GFLOP/s   "
              f"zorb.kernels.products.matmul ({route}): {r['zorb_gflops']:.1f} GFLOP/s   "
              f"-> limit uses {self.gemm_rate:.1f} GFLOP/s;  memory: XLA streams {r['stream_gbs']:.1f} GB/s "
              f"(read + write of a 256 MiB array)")
        cores = r["cores"]
        pool = "on zorb's worker pool" if r["shared_pool"] else "on its own threads"
        print(f"OpenBLAS kernels: numpy {cores.get('numpy')}, SciPy (jaxlib's LAPACK, zorb's native kernels) {cores.get('scipy')}; "
              f"OPENBLAS_CORETYPE={r['coretype_env'] or '(unset)'}; CPU AVX-512: {'yes' if r['avx512'] else 'no'}; "
              f"SciPy's OpenBLAS runs its parallel jobs {pool}")
        narrow = r["avx512"] and not r["wide_kernels"]
        if narrow and self.args.openblas_coretype != "auto":
            wide = run_worker({"task": "gemm", "size": size, "repeats": 3}, env_extra={"OPENBLAS_CORETYPE": None})
            print(f"  this CPU has AVX-512 but OpenBLAS runs {cores.get('scipy')} kernels; with its AVX-512 kernels "
                  f"(--openblas-coretype auto: {wide['cores'].get('scipy')}) numpy reaches {wide['numpy_gflops']:.1f} "
                  f"GFLOP/s (not counted in this run's limit: the fits below run in this environment)")
            self.put("gemm_gflops_numpy_auto_kernels", wide["numpy_gflops"])
        self.stream_rate = r["stream_gbs"]
        self.put("stream_gbs", r["stream_gbs"])
        self.put("gemm_gflops", self.gemm_rate)
        self.put("gemm_gflops_numpy", r["numpy_gflops"])
        self.put("gemm_gflops_xla", r["xla_gflops"])
        self.put("gemm_gflops_zorb", r["zorb_gflops"])

    # ---- one network, every solver --------------------------------------------------------
    def data_cfg(self, network, rows, shape, dataset):
        return {"network": network, "rows": rows, "shape": list(shape), "dataset": dataset,
                "data_dir": self.args.data_dir, "seed": self.args.seed, "eval_rows": self.args.eval_rows}

    def zorb_network(self, network, rows, shape, dataset, solvers, *, rcond=None, tag=None, env=None, quiet=False):
        """Fit ``network`` with each solver; print time, limit ratio, memory and the per-stage
        breakdown. Returns {solver: worker result}."""
        tag = tag or network
        plan = layer_plan(network_specs(network), shape)
        flops = fit_flops(plan, rows)
        limit = flops["total"] / (self.gemm_rate * 1e9)
        print(f"{tag}: {rows:,} samples of {'x'.join(map(str, shape))} ({dataset}); flops the algorithm needs: "
              f"{fmt_flops(flops['total'])} = refresh {flops['refresh'] / 1e9:.1f} + forward "
              f"{flops['forward'] / 1e9:.1f} + targets {flops['targets'] / 1e9:.1f} + pinv {flops['pinv'] / 1e9:.1f}"
              f" + solve (gram {flops['solve_gram'] / 1e9:.1f}, moment {flops['solve_moment'] / 1e9:.1f}, "
              f"eig {flops['solve_small'] / 1e9:.1f}); flop-bound limit {limit:.2f} s at the run's first GEMM rate")
        self.put(f"gflop_{tag}", flops["total"] / 1e9)
        self.put(f"limit_s_{tag}", limit)
        runs = []
        for solver in solvers:
            runs.append({"solver": solver, "rcond": rcond if rcond is not None else RCOND[solver]})
        results = {}
        # One process per solver keeps each peak RSS apart; quick mode shares one to save start-ups.
        batches = [runs] if self.args.quick else [[run] for run in runs]
        for batch in batches:
            cfg = self.data_cfg(network, rows, shape, dataset)
            cfg.update(task="zorb", runs=batch, warm_fits=self.args.warm_fits,
                       gemm_size=1000 if self.args.quick else 4000)
            results.update(run_worker(cfg, env_extra=env))
        for run in runs:
            solver = run["solver"]
            r = results[solver]
            rate = self.beside_rate(r)
            ratio = r["fit_seconds"] / (flops["total"] / (rate * 1e9))
            start_ratio = r["fit_seconds"] / limit
            xla_ratio = r["fit_seconds"] / (flops["total"] / (self.xla_rate * 1e9))
            print(f"  {solver:4s} rcond {run['rcond']:.0e}: fit {r['fit_seconds']:7.2f} s  "
                  f"(best of {r['warm_fits']} warm fits; first {r['first_warm_seconds']:.2f} s)  "
                  f"({ratio:5.2f}x the limit at the GEMM rate beside the fits, {rate:.1f} GFLOP/s; "
                  f"{start_ratio:4.2f}x at the run's first rate; {xla_ratio:4.2f}x at XLA's; "
                  f"{flops['total'] / r['fit_seconds'] / 1e9:5.1f} GFLOP/s)  compile "
                  f"{r['compile_seconds']:5.1f} s (first fit)  peak RSS {r['peak_rss_gib']:.2f} GiB "
                  f"(before fit {r['rss_before_fit_gib']:.2f})  train error {r['train_error']:.4f} "
                  f"acc {r['train_accuracy']:.3f}")
            if not quiet:
                self.print_layers(r["layers"], fit_flops(plan, rows, solver)["layers"], rate)
            self.put(f"fit_s_{tag}_{solver}", r["fit_seconds"])
            self.put(f"compile_s_{tag}_{solver}", r["compile_seconds"])
            self.put(f"gemm_gflops_beside_{tag}_{solver}", rate)
            self.put(f"limit_ratio_{tag}_{solver}", ratio)
            self.put(f"limit_ratio_first_rate_{tag}_{solver}", start_ratio)
            self.put(f"limit_ratio_xla_{tag}_{solver}", xla_ratio)
            self.put(f"peak_rss_gib_{tag}_{solver}", r["peak_rss_gib"])
            self.put(f"train_error_{tag}_{solver}", r["train_error"])
        return results, flops

    def beside_rate(self, result) -> float:
        """The GEMM rate a fit's ratio is taken against: the best of the samples its worker
        took between and after its warm fits (``gemm_sampler``), so that the fits and the rate
        are measured in the same minutes; this machine's speed drifts by up to 30% within a
        run. The rate of the run's first section where a worker took none."""
        samples = result.get("gemm_samples") or [self.gemm_rate]
        return max(samples)

    def print_layers(self, layers, model, gemm_rate=None):
        """Per parametric layer, the FitReport's stage seconds beside their flop-bound limits
        (``fit_flops``' per-layer flops at the GEMM rate); ``route/min`` is the flops of the
        solver's own route over the cheapest route's. Seconds include what each stage does
        besides flops (elementwise activations and inverses, patch extraction, copies)."""
        rate = (gemm_rate or self.gemm_rate) * 1e9
        print(f"    {'layer':>5s} {'design [A,1]':>17s} {'solve s':>8s} {'(limit)':>8s} {'route/min':>9s} "
              f"{'targets s':>9s} {'(limit)':>8s} {'forward s':>9s} {'(limit)':>8s} {'compile s':>9s}")
        for r in layers:
            m = model[r["index"]]
            print(f"    {r['index']:5d} {r['design'][0]:>9,d}x{r['design'][1]:<7,d} {r['solve']:8.3f} "
                  f"{m['solve'] / rate:8.3f} {m['route_solve'] / m['solve']:9.2f} {r['target']:9.3f} "
                  f"{m['targets'] / rate:8.3f} {r['forward']:9.3f} {m['forward'] / rate:8.3f} {r['compile']:9.2f}")
        total = {s: sum(r[s] for r in layers) for s in ("solve", "target", "forward", "compile")}
        limits = {s: sum(m[k] for m in model.values()) / rate for s, k in
                  (("solve", "solve"), ("target", "targets"), ("forward", "forward"))}
        print(f"    {'all':>5s} {'':17s} {total['solve']:8.3f} {limits['solve']:8.3f} {'':9s} {total['target']:9.3f} "
              f"{limits['target']:8.3f} {total['forward']:9.3f} {limits['forward']:8.3f} {total['compile']:9.2f}")

    # ---- dense networks -------------------------------------------------------------------
    def dense(self):
        rows = self.args.rows or (1_200 if self.args.quick else 10_000)
        section(f"ZORB on the dense networks ({rows:,} rows; rcond svd/qr 1e-15, gram 1e-7: the normal equations "
                f"honour nothing below ~7.5e-8 in float64)")
        self.dense_results = {}
        for network in self.networks:
            if network in HIDDEN:
                self.dense_results[network] = (self.zorb_network(network, rows, (784,), self.args.dataset,
                                                                 self.solvers)[0], rows)

    # ---- conv1 --------------------------------------------------------------------------------
    def conv(self):
        images = self.args.images or (64 if self.args.quick else 1280)
        section(f"ZORB on conv1 (Conv2D 32 3x3 -> sigmoid -> Flatten -> Dense 10 -> softmax) on {images:,} random "
                f"32x32x3 images, rcond {CONV_RCOND:g}")
        plan = layer_plan(network_specs("conv1"), (32, 32, 3))
        dense_index = next(i + 1 for i, e in enumerate(plan) if e["kind"] == "dense")
        dense_d = plan[dense_index - 1]["d"]
        if images < dense_d:
            print(f"  its dense layer's design matrix is {images:,} x {dense_d:,} (wider than tall): qr and gram work on "
                  f"the {images:,}-row side (an LQ of [A, 1], or the {images:,}^2 kernel [A, 1][A, 1]^T)")
        self.conv_results = (self.zorb_network("conv1", images, (32, 32, 3), "random", self.solvers,
                                               rcond=CONV_RCOND)[0], images)
        for solver, r in self.conv_results[0].items():
            conv = next(layer for layer in r["layers"] if layer["kind"] == "conv2d")
            self.put(f"conv1_conv_layer_s_{solver}", conv["solve"] + conv["target"] + conv["forward"])
        self.conv_layer_ratio(plan, images)

    def conv_layer_ratio(self, plan, images, tag="conv1"):
        """The conv layer's own stages against their limit (the target of issue 6: within 3x):
        its flops at the GEMM rate, and (a roofline for this memory-bound layer) that plus the
        least memory traffic it needs (``conv_layer_bytes``) at the measured stream rate."""
        flops = fit_flops(plan, images)
        results = self.conv_results[0] if tag == "conv1" else self.paper_conv
        conv_index = next(i + 1 for i, e in enumerate(plan) if e["kind"] == "conv2d")
        m = flops["layers"][conv_index]
        traffic = conv_layer_bytes(plan, images, conv_index - 1)
        print(f"  {tag} conv layer: {fmt_flops(m['solve'] + m['targets'] + m['forward'])}, and {traffic / 1e9:.2f} GB "
              f"to move at {self.stream_rate:.1f} GB/s ({traffic / (self.stream_rate * 1e9):.3f} s)")
        for solver, r in results.items():
            rate = self.beside_rate(r)
            limit = (m["solve"] + m["targets"] + m["forward"]) / (rate * 1e9)
            roofline = limit + traffic / (self.stream_rate * 1e9)
            layer = next(x for x in r["layers"] if x["index"] == conv_index)
            seconds = layer["solve"] + layer["target"] + layer["forward"]
            print(f"  {tag} conv layer alone, {solver}: {seconds:.3f} s = {seconds / limit:.2f}x the flop-bound limit "
                  f"({limit:.3f} s at {rate:.1f} GFLOP/s, the rate beside its fits), {seconds / roofline:.2f}x the "
                  f"flop + memory limit ({roofline:.3f} s)")
            self.put(f"{tag}_conv_layer_limit_ratio_{solver}", seconds / limit)
            self.put(f"{tag}_conv_layer_roofline_ratio_{solver}", seconds / roofline)

    # ---- Adam ---------------------------------------------------------------------------------
    def adam(self):
        steps = self.args.adam_steps or (50 if self.args.quick else 20_000)
        section(f"Adam (optax, jit, batch 32, {steps:,} steps) to ZORB's training error, same data and initial "
                f"weights; curve on {self.args.eval_rows:,} fixed training rows, evaluation off the clock")
        cases = [(net, res, rows, (784,), self.args.dataset, "sse") for net, (res, rows) in
                 getattr(self, "dense_results", {}).items()]
        if getattr(self, "conv_results", None):
            cases.append(("conv1", self.conv_results[0], self.conv_results[1], (32, 32, 3), "random",
                          "cross_entropy"))
        for network, zorb_results, rows, shape, dataset, loss in cases:
            cfg = self.data_cfg(network, rows, shape, dataset)
            cfg.update(task="adam", steps=steps, lr=ADAM_LR[network], loss=loss, curve_points=self.args.curve_points,
                       targets={s: (r["fit_seconds"], r["train_error_eval_rows"]) for s, r in zorb_results.items()})
            r = run_worker(cfg)
            tag = "conv1" if network == "conv1" else network
            print(f"{network}: Adam lr {ADAM_LR[network]:g}, loss {loss}: {r['fit_seconds']:.1f} s for {steps:,} steps "
                  f"(compile {r['compile_seconds']:.1f} s), error {r['curve'][0][2]:.4f} -> {r['final_error']:.4f}")
            self.put(f"adam_s_{tag}", r["fit_seconds"])
            for solver, t in r["targets"].items():
                z = zorb_results[solver]
                if t["reached_seconds"] is None:
                    how = f"never reached in {steps:,} steps: whole {r['fit_seconds']:.1f} s counts"
                else:
                    how = f"reached at step {t['reached_step']:,} after {t['reached_seconds']:.2f} s"
                print(f"  vs ZORB {solver:4s} (error {z['train_error_eval_rows']:.4f}, {z['fit_seconds']:.2f} s): "
                      f"{how}; speed-up {t['speedup']:.1f}x")
                self.put(f"adam_speedup_{tag}_{solver}", t["speedup"])
                self.put(f"adam_reached_{tag}_{solver}", 0 if t["reached_seconds"] is None else 1)

    # ---- memory: streamed fit of 1M rows --------------------------------------------------------
    def memory(self):
        rows = self.args.memory_rows
        chunk = min(self.args.chunk_rows, rows)
        solver = self.args.memory_solver
        plan = layer_plan(network_specs("mnist_6"), (784,))
        done = chunked_fit_flops(plan, rows, solver)
        needed = fit_flops(plan, rows)["total"]
        rate = self.gemm_rate * 1e9
        section(f"Streamed fit: mnist_6 on {rows:,} MNIST-shaped rows held as uint8 ({rows * 784 / 2 ** 20:,.0f} MiB), "
                f"chunk_rows {chunk:,}, solver {solver}")
        print(f"flops: the streamed fit does {fmt_flops(done)} (inputs recomputed from X on every pass); the "
              f"in-memory algorithm needs {fmt_flops(needed)}; at {self.gemm_rate:.0f} GFLOP/s: "
              f"{done / rate:,.0f} s and {needed / rate:,.0f} s")
        r = run_worker({"task": "memory", "rows": rows, "chunk_rows": chunk, "solver": solver, "seed": self.args.seed})
        print(f"  fit {r['fit_seconds']:.1f} s (compile excluded: {r['compile_seconds']:.1f} s in this fit, "
              f"{r['warmup_compile_seconds']:.1f} s in the {min(rows, 2 * chunk):,}-row warm-up)  peak RSS "
              f"{r['peak_rss_gib']:.2f} GiB (X {r['x_bytes_gib']:.2f} GiB; {r['rss_before_fit_gib']:.2f} before "
              f"the fit)  {done / r['fit_seconds'] / 1e9:.1f} GFLOP/s; {r['fit_seconds'] / (done / rate):.2f}x "
              f"the limit of what it does, {r['fit_seconds'] / (needed / rate):.2f}x the limit of what is needed")
        self.print_layers(r["layers"], fit_flops(plan, rows, solver)["layers"])
        print("    (limits above are the in-memory algorithm's; the streamed fit redoes the forward below each "
              "layer on every pass)")
        self.put("memory_rows", rows)
        self.put("memory_fit_s", r["fit_seconds"])
        self.put("memory_peak_rss_gib", r["peak_rss_gib"])
        self.put("memory_limit_ratio_done", r["fit_seconds"] / (done / rate))
        self.put("memory_limit_ratio_needed", r["fit_seconds"] / (needed / rate))

    # ---- the authors' shapes --------------------------------------------------------------------
    def paper(self):
        rows = 3_000 if self.args.quick else 60_000
        images = 100 if self.args.quick else 1_000
        section(f"The authors' shapes: mnist_6 on {rows:,} rows (their JAX code: 96 s, 4.3 GiB peak; numpy 233 s, "
                f"3.1 GiB on this machine)")
        res, _ = self.zorb_network("mnist_6", rows, (784,), "random", self.solvers, tag="paper_mnist_6")
        section(f"The authors' shapes: conv 8 kernels 3x3 on {images:,} 28x28x1 images (their conv layer: 9.6 s), "
                f"rcond {CONV_RCOND:g}")
        self.paper_conv, _ = self.zorb_network("conv8", images, (28, 28, 1), "random", self.solvers,
                                               rcond=CONV_RCOND, tag="paper_conv8")
        self.conv_layer_ratio(layer_plan(network_specs("conv8"), (28, 28, 1)), images, tag="paper_conv8")
        for solver, r in self.paper_conv.items():
            conv = next(layer for layer in r["layers"] if layer["kind"] == "conv2d")
            self.put(f"paper_conv8_conv_layer_s_{solver}", conv["solve"] + conv["target"] + conv["forward"])

    # ---- thread settings ------------------------------------------------------------------------
    THREAD_VARIANTS = {
        "default": {},
        "openblas1": {"OPENBLAS_NUM_THREADS": "1"},
        "xla1": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"},
        "all1": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                 "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"},
    }

    def threads(self):
        rows = self.args.rows or (1_200 if self.args.quick else 10_000)
        network = self.networks[0] if self.networks[0] in HIDDEN else "mnist_6"
        section(f"Thread settings: {network} on {rows:,} rows, each variant in a fresh process "
                f"(environment set before import)")
        for name, env in self.THREAD_VARIANTS.items():
            print(f"  -- {name}: {' '.join(f'{k}={v!r}' for k, v in env.items()) or '(environment as inherited)'}")
            results, _ = self.zorb_network(network, rows, (784,), self.args.dataset, self.solvers,
                                           tag=f"threads_{name}_{network}", env=env, quiet=True)
            for solver, r in results.items():
                stages = {s: sum(x[s] for x in r["layers"]) for s in ("solve", "target", "forward")}
                print(f"     {solver:4s} stages: solve {stages['solve']:.2f} s, targets {stages['target']:.2f} s, "
                      f"forward {stages['forward']:.2f} s")
        if self.gemm_rate is not None:
            for name in ("openblas1", "xla1"):
                r = run_worker({"task": "gemm", "size": 1500 if self.args.quick else 4000, "repeats": 3},
                               env_extra=self.THREAD_VARIANTS[name])
                print(f"  GEMM with {name}: numpy {r['numpy_gflops']:.1f} GFLOP/s, XLA {r['xla_gflops']:.1f} GFLOP/s")
                self.put(f"threads_gemm_numpy_{name}", r["numpy_gflops"])
                self.put(f"threads_gemm_xla_{name}", r["xla_gflops"])

    def run(self, sections):
        print(f"zorb benchmark: {os.cpu_count()} cores, python {sys.version.split()[0]}, sections "
              f"{','.join(sections)}, seed {self.args.seed}, load average {load_text()}; OPENBLAS_NUM_THREADS="
              f"{os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')} XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')!r} "
              f"--openblas-coretype {self.args.openblas_coretype}",
              flush=True)
        started = time.perf_counter()
        self.gemm()
        print(f"(section took {time.perf_counter() - started:.0f} s)")
        for name in ("dense", "conv", "adam", "memory", "paper", "threads"):
            if name in sections:
                begun = time.perf_counter()
                getattr(self, name)()
                print(f"(section took {time.perf_counter() - begun:.0f} s)", flush=True)
        self.put("bench_s", time.perf_counter() - started)
        if OTHER_LOAD:
            self.put("other_load_max_cores", max(OTHER_LOAD), 2)
            print(f"\nother processes kept up to {max(OTHER_LOAD):.2f} of {os.cpu_count()} cores busy during a "
                  f"measurement (mean {sum(OTHER_LOAD) / len(OTHER_LOAD):.2f}): timings are comparable only near 0")
        print()
        print(" ".join(f"{k}={v:g}" for k, v in self.keys.items()))


SECTIONS = ("dense", "conv", "adam", "memory", "paper", "threads")


def real_dataset(data_dir: str) -> str:
    """``mnist`` or ``fashion_mnist`` when its idx files are found (in ``data_dir``, or
    Debian's Fashion-MNIST package), else ``random``."""
    from pathlib import Path

    from zorb.data.images import check_image_files
    from zorb.errors import ZorbError

    for name in ("mnist", "fashion_mnist"):
        try:
            check_image_files(name, Path(data_dir))
            return name
        except ZorbError:
            continue
    return "random"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few Adam steps, every section of the default run plus a tiny --memory")
    parser.add_argument("--memory", action="store_true", help="only the streamed 1M-row fit (and the GEMM rate)")
    parser.add_argument("--paper-shapes", action="store_true", help="only the authors' shapes (and the GEMM rate)")
    parser.add_argument("--threads", action="store_true", help="only the thread-setting comparison (and GEMM)")
    parser.add_argument("--sections", help=f"comma list of {','.join(SECTIONS)} (overrides the modes above)")
    parser.add_argument("--rows", type=int, help="rows for the dense networks (default 10,000); with --memory, "
                                                 "the rows of the streamed fit (default 1,000,000)")
    parser.add_argument("--images", type=int, help="images for conv1 (default 1,280)")
    parser.add_argument("--solvers", default="svd,qr,gram")
    parser.add_argument("--networks", help="comma list of mnist_6, mnist_11, conv1 (default all three; quick: "
                                           "mnist_6,conv1)")
    parser.add_argument("--dataset", default="auto", choices=("auto", "random", "mnist", "fashion_mnist"),
                        help="inputs of the dense networks: random uniform rows, or real data from --data-dir "
                             "(zorb.data.load_dataset; Debian's Fashion-MNIST is found as a fallback); auto "
                             "(default): MNIST if its files are there, else Fashion-MNIST, else random; --quick: "
                             "random")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--adam-steps", type=int, help="Adam's step budget (default 20,000; quick 50)")
    parser.add_argument("--eval-rows", type=int, default=2_000, help="rows Adam's error curve is measured on")
    parser.add_argument("--curve-points", type=int, default=100, help="Adam evaluations over its run")
    parser.add_argument("--chunk-rows", type=int, default=20_000, help="chunk size of the streamed fit")
    parser.add_argument("--memory-solver", default="gram", choices=("qr", "gram"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-fits", type=int, help="timed fits after the compiling one, best reported "
                                                       "(default 5; quick 1)")
    parser.add_argument("--openblas-coretype", default="environment", metavar="{environment,auto,NAME}",
                        help="OpenBLAS kernels for every measurement: as the environment sets them (default), "
                             "auto (an OPENBLAS_CORETYPE in the environment is dropped: OpenBLAS's detection, "
                             "or zorb.kernels.cpu's AVX-512 choice), or a core name such as SkylakeX or Haswell")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args, []
    if args.sections:
        sections = [s.strip() for s in args.sections.split(",") if s.strip()]
        bad = sorted(set(sections) - set(SECTIONS))
        if bad:
            parser.error(f"unknown section {bad[0]!r}: choose from {', '.join(SECTIONS)}")
    elif args.memory or args.paper_shapes or args.threads:
        sections = [s for s, on in (("memory", args.memory), ("paper", args.paper_shapes),
                                    ("threads", args.threads)) if on]
    else:
        sections = ["dense", "conv", "adam"] + (["memory"] if args.quick else [])
    args.memory_rows = (args.rows if args.memory and args.rows else None) or (2_000 if args.quick else 1_000_000)
    if args.quick:
        args.chunk_rows = min(args.chunk_rows, 500)
        args.eval_rows = min(args.eval_rows, 200)
        args.curve_points = min(args.curve_points, 10)
        if args.networks is None:  # mnist_11 adds nothing to a smoke run but 40 s of compiling and fitting
            args.networks = "mnist_6,conv1"
    if args.networks is None:
        args.networks = "mnist_6,mnist_11,conv1"
    if args.warm_fits is None:
        args.warm_fits = 1 if args.quick else 5
    if args.warm_fits < 1:
        parser.error("--warm-fits must be at least 1")
    if args.dataset == "auto":
        args.dataset = "random" if args.quick else real_dataset(args.data_dir)
    if args.memory and args.rows and "dense" not in sections:
        args.rows = None
    return args, sections


def main(argv=None) -> None:
    args, sections = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    if args.openblas_coretype == "auto":
        WORKER_ENV["OPENBLAS_CORETYPE"] = None
    elif args.openblas_coretype != "environment":
        WORKER_ENV["OPENBLAS_CORETYPE"] = args.openblas_coretype
    bench = Bench(args)
    bench.solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    bad = sorted(set(bench.solvers) - set(RCOND))
    if bad:
        raise SystemExit(f"unknown solver {bad[0]!r}: choose from {', '.join(RCOND)}")
    bench.networks = [s.strip() for s in args.networks.split(",") if s.strip()]
    for name in bench.networks:
        network_specs(name)
    if "conv1" not in bench.networks and "conv" in sections:
        sections.remove("conv")
    bench.run(sections)


if __name__ == "__main__":
    main()
