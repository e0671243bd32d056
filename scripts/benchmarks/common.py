"""What every benchmark section shares: the networks, the worker processes that measure,
the GEMM rate, peak memory and the machine-readable results.

Every measurement runs in a fresh Python process (``scripts/bench.py --worker CFG``), so its
peak RSS is its own and the thread settings of its environment apply from the first import.
A worker prints one ``BENCH_RESULT {json}`` line; ``run_worker`` returns that JSON.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench.py"
CLASSES = 10
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


def dense_specs(hidden, activation="tanh"):
    specs = [spec for units in hidden for spec in ({"type": "dense", "units": units}, {"type": activation})]
    return specs + [{"type": "dense", "units": CLASSES}, {"type": "softmax"}]


def conv_specs(filters, hidden=()):
    """Conv2D(filters, 3x3) -> sigmoid -> flatten -> [dense(units) -> sigmoid]... -> dense 10 -> softmax."""
    specs = [{"type": "conv2d", "filters": filters, "kernel_size": 3}, {"type": "sigmoid"}, {"type": "flatten"}]
    return specs + dense_specs(hidden, "sigmoid")


NETWORKS = {
    "mnist_6": dense_specs(HIDDEN["mnist_6"]),
    "mnist_11": dense_specs(HIDDEN["mnist_11"]),
    "conv1": conv_specs(32),
    "readme_conv": conv_specs(8, (1024,)),
}
"""``readme_conv`` is the conv network of the authors' README: Conv2D(8, 3), sigmoid, Dense
1024, sigmoid, Dense 10, softmax."""


def network_specs(name: str):
    if name not in NETWORKS:
        raise SystemExit(f"unknown network {name!r}: choose from {', '.join(NETWORKS)}")
    return NETWORKS[name]


# ---- in the worker ---------------------------------------------------------------------------

RESULT_PREFIX = "BENCH_RESULT "
TASKS = {"gemm": "common:work_gemm", "zorb": "dense:work_zorb", "adam": "adam:work_adam",
         "memory": "memory:work_memory", "authors": "authors:work_authors", "kernels": "kernels:work_kernels"}
"""Worker task -> ``module:function`` in this package, each taking the cfg dict."""


def worker_main(text: str) -> None:
    cfg = json.loads(text)
    if cfg["task"] != "authors":  # the authors' code runs in its own process settings
        from zorb.kernels.tuning import tune_process

        tune_process()  # before anything loads OpenBLAS, as run.py does
    module, function = TASKS[cfg["task"]].split(":")
    result = getattr(importlib.import_module(f"benchmarks.{module}"), function)(cfg)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def current_rss_gib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except OSError:
        return float("nan")


def make_data(cfg):
    """(X, Y) float64: random uniform inputs with one-hot random classes, or a real dataset
    through ``zorb.data.load_dataset``. The same cfg gives the same arrays."""
    import numpy as np

    n, shape = cfg["rows"], tuple(cfg["shape"])
    if cfg.get("dataset", "random") != "random":
        from zorb.data import load_dataset

        data = load_dataset(cfg["dataset"], data_dir=cfg["data_dir"], seed=cfg["seed"], train_samples=n,
                            flatten=len(shape) == 1)
        return data.x_train, data.y_train
    rng = np.random.default_rng(cfg["seed"])
    return rng.random((n, *shape)), np.eye(CLASSES)[rng.integers(0, CLASSES, n)]


def work_gemm(cfg):
    """GFLOP/s of a size^3 float64 product by numpy's OpenBLAS, XLA's dot and
    ``zorb.kernels.products.matmul`` (the fits' products), and XLA's memory stream rate."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import zorb.core  # noqa: F401  (turns on float64 in JAX: without it jnp.asarray makes float32)
    from zorb.kernels import cpu, native
    from zorb.kernels.products import matmul

    n, repeats = cfg["size"], cfg["repeats"]
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)), rng.random((n, n))

    def best(fn, work=2.0 * n ** 3, warmups=1):
        for _ in range(warmups):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return work / min(times) / 1e9

    ja, jb = jnp.asarray(a), jnp.asarray(b)
    assert ja.dtype == jnp.float64, ja.dtype
    dot, product = jax.jit(jnp.dot), jax.jit(matmul)
    # Memory: XLA reading and writing a 256 MiB array. Six warm-up calls, until the heap holds
    # freed blocks for the outputs (a fresh page faults, several us on a virtual machine).
    big, scale = jnp.ones((2 ** 25,), jnp.float64), jax.jit(lambda v: v * 2.0)
    return {"numpy_gflops": best(lambda: a @ b), "xla_gflops": best(lambda: dot(ja, jb).block_until_ready()),
            "zorb_gflops": best(lambda: product(ja, jb).block_until_ready()),
            "stream_gbs": best(lambda: scale(big).block_until_ready(), work=2 * big.nbytes, warmups=6),
            "blas": native.NATIVE, "gemm_native": native.GEMM_NATIVE, "shared_pool": native.SHARED_POOL, "size": n,
            "cores": native.openblas_cores(), "wide_kernels": native.wide_kernels(native.openblas_cores().get("scipy")),
            "avx512": cpu.has_avx512(), "coretype_env": os.environ.get("OPENBLAS_CORETYPE")}


def gemm_sampler(size: int):
    """A function that measures the float64 GEMM rate now (GFLOP/s): one size^3 product each
    by numpy, ``zorb.kernels.products.matmul`` and XLA's dot, the fastest. Taken in a fit's own
    worker after each warm fit, so that fit and rate come from the same minutes: on a shared
    virtual machine both drift by up to 30% within a run."""
    import jax
    import numpy as np
    from zorb.kernels.products import matmul

    state = {}

    def sample() -> float:
        if not state:
            rng = np.random.default_rng(0)
            a, b = rng.random((size, size)), rng.random((size, size))
            state.update(a=a, b=b, ja=jax.numpy.asarray(a), jb=jax.numpy.asarray(b))
            state["jitted"] = [jax.jit(matmul), jax.jit(jax.numpy.dot)]
            for fn in state["jitted"]:  # compiles
                fn(state["ja"], state["jb"]).block_until_ready()
        calls = [lambda: state["a"] @ state["b"]] + [
            lambda fn=fn: fn(state["ja"], state["jb"]).block_until_ready() for fn in state["jitted"]]
        best = math.inf
        for call in calls:
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        return 2.0 * size ** 3 / best / 1e9

    return sample


# ---- in the parent ---------------------------------------------------------------------------

WORKER_ENV: dict[str, str | None] = {}
"""Changes to every worker's environment (None removes a variable): ``--openblas-coretype``."""
OTHER_LOAD: list[float] = []
"""Cores used by other processes while each worker ran (machine busy time less our workers')."""
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


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


def run_worker(cfg, env_extra=None, cores=None, timeout=None):
    """Run one measurement in a fresh process (pinned to the CPU set ``cores`` if given, from
    its start); records how many cores other processes kept busy meanwhile (timings are
    comparable only when that is near 0)."""
    env = {**os.environ, **WORKER_ENV, **(env_extra or {})}
    env = {k: v for k, v in env.items() if v is not None}
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    busy, mine, wall = busy_seconds(), children_cpu_seconds(), time.perf_counter()
    proc = subprocess.run([sys.executable, str(BENCH), "--worker", json.dumps(cfg)], env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=pin)
    wall = time.perf_counter() - wall
    if busy is not None:
        other = max(0.0, (busy_seconds() - busy - (children_cpu_seconds() - mine)) / wall)
        OTHER_LOAD.append(other)
        print(f"  [worker {cfg['task']}: {wall:.0f} s; other processes kept {other:.2f} cores busy]", flush=True)
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


def section(title: str) -> None:
    print(f"\n== {title} ==  (load average {load_text()})", flush=True)


class Results:
    """The run's machine-readable results, printed as the last line (``key=value`` pairs),
    and what one section hands to the next (the GEMM rate, the fits Adam is compared with)."""

    def __init__(self, args):
        self.args = args
        self.keys: dict[str, float] = {}
        self.gemm_rate = self.xla_rate = self.stream_rate = None  # GFLOP/s, GFLOP/s, GB/s
        self.dense: dict = {}  # network -> ({solver: worker result}, rows)
        self.conv: dict = {}   # network -> ({solver: worker result}, images)

    def put(self, key, value, digits=4):
        if value is not None and math.isfinite(float(value)):
            self.keys[key] = float(f"{float(value):.{digits}g}")

    def line(self) -> str:
        return " ".join(f"{k}={v:g}" for k, v in self.keys.items())


def gemm_section(results: Results) -> None:
    """The float64 GEMM rate the limits are taken at, and XLA's stream rate."""
    size = 1000 if results.args.quick else 4000
    section(f"float64 GEMM rate ({size}x{size} @ {size}x{size}, warm, best of 3; 2*m*n*k flops)")
    r = run_worker({"task": "gemm", "size": size, "repeats": 3})
    results.gemm_rate = max(r["numpy_gflops"], r["xla_gflops"], r["zorb_gflops"])
    results.xla_rate, results.stream_rate = r["xla_gflops"], r["stream_gbs"]
    route = ("XLA: zorb's extension is off" if not r["blas"] else "dgemm via XLA FFI" if r["gemm_native"]
             else "XLA's dot: faster than these OpenBLAS kernels")
    print(f"numpy (OpenBLAS): {r['numpy_gflops']:.1f} GFLOP/s   XLA jnp.dot: {r['xla_gflops']:.1f} GFLOP/s   "
          f"zorb.kernels.products.matmul ({route}): {r['zorb_gflops']:.1f} GFLOP/s   -> limit uses "
          f"{results.gemm_rate:.1f} GFLOP/s;  memory: XLA streams {r['stream_gbs']:.1f} GB/s (read + write of 256 MiB)")
    cores = r["cores"]
    pool = "on zorb's worker pool" if r["shared_pool"] else "on its own threads"
    print(f"OpenBLAS kernels: numpy {cores.get('numpy')}, SciPy (jaxlib's LAPACK, zorb.kernels) "
          f"{cores.get('scipy')}; OPENBLAS_CORETYPE={r['coretype_env'] or '(unset)'}; CPU AVX-512: "
          f"{'yes' if r['avx512'] else 'no'}; SciPy's OpenBLAS runs its parallel jobs "
          f"{pool}")
    if r["avx512"] and not r["wide_kernels"] and results.args.openblas_coretype != "auto":
        wide = run_worker({"task": "gemm", "size": size, "repeats": 3}, env_extra={"OPENBLAS_CORETYPE": None})
        print(f"  this CPU has AVX-512 but OpenBLAS runs {cores.get('scipy')} kernels; with its AVX-512 kernels "
              f"(--openblas-coretype auto: {wide['cores'].get('scipy')}) numpy reaches {wide['numpy_gflops']:.1f} "
              f"GFLOP/s (not counted in this run's limit: the fits below run in this environment)")
        results.put("gemm_gflops_numpy_auto_kernels", wide["numpy_gflops"])
    results.put("stream_gbs", r["stream_gbs"])
    results.put("gemm_gflops", results.gemm_rate)
    results.put("gemm_gflops_numpy", r["numpy_gflops"])
    results.put("gemm_gflops_xla", r["xla_gflops"])
    results.put("gemm_gflops_zorb", r["zorb_gflops"])
