"""scripts/bench.py: the flop model behind the flop-bound limit, bad input, and --quick end to
end (every section runs and the last line is machine-readable)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCH = SCRIPTS / "bench.py"
sys.path.insert(0, str(SCRIPTS))

from benchmarks.common import NETWORKS  # noqa: E402
from benchmarks.flops import (fit_flops, gram_route_flops, gram_solve_flops, layer_plan,  # noqa: E402
                              route_solve_flops, tridiagonal_flops)

SOLVERS = ("svd", "qr", "gram")
NETWORKS_QUICK = ("mnist_6",)  # --quick fits mnist_6 and conv1 only

EXPECTED = (
    ["gemm_gflops", "gemm_gflops_numpy", "gemm_gflops_xla", "memory_rows", "memory_fit_s", "memory_peak_rss_gib",
     "memory_limit_ratio_done", "memory_limit_ratio_needed", "bench_s", "gflop_conv1", "limit_s_conv1",
     "adam_s_conv1"]
    + [f"{key}_{net}" for net in NETWORKS_QUICK for key in ("gflop", "limit_s", "adam_s")]
    + [f"{key}_{net}_{solver}" for net in (*NETWORKS_QUICK, "conv1") for solver in SOLVERS
       for key in ("fit_s", "compile_s", "gflop", "limit_ratio", "limit_ratio_first_rate", "gemm_gflops_beside",
                   "peak_rss_gib", "adam_speedup")]
    + [f"conv1_conv_layer_limit_ratio_{solver}" for solver in SOLVERS]
)


def test_flop_model_counts_what_the_gram_route_runs():
    # 1,001^2 normal equations, 800 targets (mnist_6's second layer). Nothing cut: the
    # eigenvalues (a tridiagonal reduction) and a Cholesky solve, not a full eigendecomposition
    # with its eigenvectors (4 n^3 and two products with them), which the route never computes.
    n, k = 1001, 800
    nothing_cut = gram_solve_flops(n, k)
    assert nothing_cut == pytest.approx(4 / 3 * n ** 3 + n ** 3 / 3 + 2 * n * n * k)
    assert nothing_cut < 4.0 * n ** 3 + 4.0 * n * n * k
    assert gram_solve_flops(n, k, rank=n) == nothing_cut
    # Cut at rank r: the kept eigenvectors only; few kept cost less than the Cholesky branch.
    assert gram_solve_flops(n, k, rank=37) < gram_solve_flops(n, k, rank=367) < nothing_cut
    assert gram_solve_flops(n, k, rank=37) > tridiagonal_flops(n)


@pytest.mark.parametrize("network, shape, rows", [("mnist_6", (784,), 10_000), ("mnist_6", (784,), 60_000),
                                                  ("mnist_11", (784,), 10_000), ("conv1", (32, 32, 3), 1_280),
                                                  ("readme_conv", (28, 28, 1), 1_000)])
def test_the_limit_is_at_most_what_every_solver_does(network, shape, rows):
    plan = layer_plan(NETWORKS[network], shape)
    for solver in SOLVERS:
        layers = fit_flops(plan, rows, solver)["layers"]
        for index, layer in layers.items():
            assert layer["solve"] <= layer["route_solve"] * (1 + 1e-12), (network, solver, index)
    for entry in plan:
        if entry["parametric"]:
            r, d, k = rows * entry["positions"], entry["d"], entry["k"]
            assert sum(gram_route_flops(r, d, k).values()) == route_solve_flops("gram", r, d, k)


def test_layer_plan_matches_zorbs_fit_report():
    # The limit is keyed by the FitReport's layer indices and design shapes: a real fit must
    # agree with the plan, and a cut solve is counted at the rank it kept.
    import zorb

    specs = [{"type": "conv2d", "filters": 4, "kernel_size": 3}, {"type": "sigmoid"}, {"type": "flatten"},
             {"type": "dense", "units": 6}, {"type": "tanh"}, {"type": "dense", "units": 3}, {"type": "softmax"}]
    rng = np.random.default_rng(0)
    x = rng.random((300, 6, 6, 2))
    x[..., 1] = x[..., 0]  # two equal channels: the conv layer's patch matrix is rank-deficient
    y = np.eye(3)[rng.integers(0, 3, 300)]
    network = zorb.build_network(specs, (6, 6, 2), output_dim=3, seed=0)
    _, report = zorb.fit(network, x, y, solver="gram", rcond=1e-7)
    plan = layer_plan(specs, (6, 6, 2))
    ranks = {layer.index: layer.rank for layer in report.layers}
    model = fit_flops(plan, 300, "gram", ranks)["layers"]
    assert sorted(model) == sorted(ranks)
    for layer in report.layers:
        entry = plan[layer.index - 1]
        assert tuple(layer.design_shape) == (300 * entry["positions"], entry["d"])
        assert model[layer.index]["solve"] == sum(gram_route_flops(*layer.design_shape, entry["k"],
                                                                   layer.rank).values())
    conv = report.layers[0]
    assert conv.rank < conv.design_shape[1]  # the cut branch was taken and is what is counted


def test_authors_code_path_is_checked_before_any_compute(tmp_path):
    for path, words in ((tmp_path / "missing", "no such directory"), (tmp_path, "Sequential.py")):
        proc = subprocess.run([sys.executable, str(BENCH), "--paper-shapes", "--authors-code", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert words in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "zorb benchmark" not in proc.stdout


def parse_last_line(stdout: str) -> dict[str, float]:
    last = stdout.strip().splitlines()[-1]
    pairs = {}
    for item in last.split():
        key, sep, value = item.partition("=")
        assert sep and key and value, f"not a key=value pair: {item!r}"
        assert key not in pairs, f"duplicate key {key}"
        pairs[key] = float(value)
    return pairs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_bench_runs_every_section_and_ends_with_key_values():
    # Its time is the benchmark's own business (it prints it as bench_s), not a test's.
    proc = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for title in ("float64 GEMM rate", "ZORB on the dense networks", "ZORB on conv1", "Adam", "Streamed fit"):
        assert title in proc.stdout, f"section {title!r} missing"
    values = parse_last_line(proc.stdout)
    missing = [key for key in EXPECTED if key not in values]
    assert not missing, f"missing keys: {missing}"
    for key, value in values.items():
        assert math.isfinite(value) and value >= 0, f"{key}={value}"
    for key in EXPECTED:
        assert values[key] > 0, f"{key}={values[key]}"
    for net in (*NETWORKS_QUICK, "conv1"):
        for solver in SOLVERS:
            assert values[f"adam_reached_{net}_{solver}"] in (0, 1)
            # fit time over the flops of the route at the ranks this solve kept, at the rate
            # measured beside the fits; the other at the first section's rate (4 significant digits)
            fit, gflop = values[f"fit_s_{net}_{solver}"], values[f"gflop_{net}_{solver}"]
            assert values[f"limit_ratio_{net}_{solver}"] == pytest.approx(
                fit / (gflop / values[f"gemm_gflops_beside_{net}_{solver}"]), rel=2e-3)
            assert values[f"limit_ratio_first_rate_{net}_{solver}"] == pytest.approx(
                fit / (gflop / values["gemm_gflops"]), rel=2e-3)
