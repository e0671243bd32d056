"""The streamed fit: mnist_6 on MNIST-shaped rows held as uint8 (1,000,000 by default),
``zorb.fit(chunk_rows=...)``, peak RSS of the whole process."""

from __future__ import annotations

import time

from benchmarks.common import CLASSES, RCOND, current_rss_gib, network_specs, peak_rss_gib, run_worker, section
from benchmarks.dense import layer_rows, print_layers
from benchmarks.flops import chunked_fit_flops, fit_flops, fmt_flops, layer_plan


class Uint8Rows:
    """Rows held as uint8 pixels; a slice gives float64 in [0, 1] (what the streamed fit reads
    chunk by chunk: ``np.asarray(X[start:stop])``)."""

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
    """Worker: a warm-up fit on two chunks (compiles every per-chunk stage), then the full fit."""
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
    warm_rows = min(rows, 2 * chunk)
    _, cold = zorb.fit(net, Uint8Rows(pixels[:warm_rows]), OneHotRows(labels[:warm_rows]), **options)
    start = time.perf_counter()
    trained, report = zorb.fit(net, x, y, **options)
    wall = time.perf_counter() - start
    sample = slice(0, min(rows, 10_000))
    error = zorb.scores(zorb.predict(trained, x[sample]), y[sample], task="regression")["error"]
    return {"fit_seconds": report.fit_seconds, "wall_seconds": wall, "compile_seconds": report.compile_seconds,
            "warmup_compile_seconds": cold.compile_seconds, "train_error_first_10k": error,
            "layers": layer_rows(report), "rss_before_fit_gib": rss_before, "x_bytes_gib": pixels.nbytes / 2 ** 30,
            "peak_rss_gib": peak_rss_gib()}


def memory_section(results):
    args = results.args
    rows, solver = args.memory_rows, args.memory_solver
    chunk = min(args.chunk_rows, rows)
    plan = layer_plan(network_specs("mnist_6"), (784,))
    done, needed = chunked_fit_flops(plan, rows, solver), fit_flops(plan, rows)["total"]
    rate = results.gemm_rate * 1e9
    section(f"Streamed fit: mnist_6 on {rows:,} MNIST-shaped rows held as uint8 ({rows * 784 / 2 ** 20:,.0f} MiB), "
            f"chunk_rows {chunk:,}, solver {solver}")
    print(f"flops: the streamed fit does {fmt_flops(done)} (inputs recomputed from X on every pass); the "
          f"in-memory algorithm needs {fmt_flops(needed)}; at {results.gemm_rate:.0f} GFLOP/s: "
          f"{done / rate:,.0f} s and {needed / rate:,.0f} s")
    r = run_worker({"task": "memory", "rows": rows, "chunk_rows": chunk, "solver": solver, "seed": args.seed})
    print(f"  fit {r['fit_seconds']:.1f} s (compile excluded: {r['compile_seconds']:.1f} s in this fit, "
          f"{r['warmup_compile_seconds']:.1f} s in the warm-up)  peak RSS {r['peak_rss_gib']:.2f} GiB (X "
          f"{r['x_bytes_gib']:.2f} GiB; {r['rss_before_fit_gib']:.2f} before the fit)  "
          f"{done / r['fit_seconds'] / 1e9:.1f} GFLOP/s; {r['fit_seconds'] / (done / rate):.2f}x the limit of what "
          f"it does, {r['fit_seconds'] / (needed / rate):.2f}x the limit of what is needed")
    print_layers(r["layers"], fit_flops(plan, rows, solver)["layers"], results.gemm_rate)
    print("    (limits above are the in-memory algorithm's; the streamed fit redoes the forward below each layer on "
          "every pass)")
    results.put("memory_rows", rows)
    results.put("memory_fit_s", r["fit_seconds"])
    results.put("memory_peak_rss_gib", r["peak_rss_gib"])
    results.put("memory_limit_ratio_done", r["fit_seconds"] / (done / rate))
    results.put("memory_limit_ratio_needed", r["fit_seconds"] / (needed / rate))
