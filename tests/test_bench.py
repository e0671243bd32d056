"""scripts/bench.py --quick end to end: every section runs and the last line is machine-readable."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
SOLVERS = ("svd", "qr", "gram")
NETWORKS = ("mnist_6",)  # --quick fits mnist_6 and conv1 only

EXPECTED = (
    ["gemm_gflops", "gemm_gflops_numpy", "gemm_gflops_xla", "memory_rows", "memory_fit_s", "memory_peak_rss_gib",
     "memory_limit_ratio_done", "memory_limit_ratio_needed", "bench_s", "gflop_conv1", "limit_s_conv1",
     "adam_s_conv1"]
    + [f"{key}_{net}" for net in NETWORKS for key in ("gflop", "limit_s", "adam_s")]
    + [f"{key}_{net}_{solver}" for net in (*NETWORKS, "conv1") for solver in SOLVERS
       for key in ("fit_s", "compile_s", "limit_ratio", "limit_ratio_first_rate", "gemm_gflops_beside",
                   "peak_rss_gib", "adam_speedup")]
    + [f"conv1_conv_layer_limit_ratio_{solver}" for solver in SOLVERS]
)


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
    for net in (*NETWORKS, "conv1"):
        for solver in SOLVERS:
            assert values[f"adam_reached_{net}_{solver}"] in (0, 1)
            # the ratio is fit time over flops at the rate measured beside the fits; the other at
            # the first section's rate (values are printed to 4 significant digits)
            fit, gflop = values[f"fit_s_{net}_{solver}"], values[f"gflop_{net}"]
            beside = values[f"gemm_gflops_beside_{net}_{solver}"]
            assert values[f"limit_ratio_{net}_{solver}"] == pytest.approx(fit / (gflop / beside), rel=2e-3)
            assert values[f"limit_ratio_first_rate_{net}_{solver}"] == pytest.approx(
                fit / (gflop / values["gemm_gflops"]), rel=2e-3)
