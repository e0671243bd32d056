#!/usr/bin/env python
"""Time ZORB fits on the paper's shapes, warm-up excluded, compile time apart.

    python scripts/bench.py                       # mnist_6 dense net on 10,000 rows + conv net on 1,000 images
    python scripts/bench.py --rows 2000 --images 200 --solvers qr,gram

Inputs are random with MNIST's shapes (784 features / 28x28x1 images, 10 one-hot classes):
the fit's cost depends on shapes, not values. Each configuration is fitted once to compile
(reported as compile time) and then timed on a second, warm fit. The last line is
machine-readable: ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import zorb

MNIST_6 = (1000, 800, 600, 400, 200)


def dense_specs(hidden, activation="tanh"):
    specs = []
    for units in hidden:
        specs += [{"type": "dense", "units": units}, {"type": activation}]
    return specs + [{"type": "dense", "units": "outputs"}, {"type": "softmax"}]


CONV_DENSE = [{"type": "conv2d", "filters": 8, "kernel_size": 3}, {"type": "sigmoid"}, {"type": "flatten"},
              {"type": "dense", "units": "outputs"}, {"type": "softmax"}]


def rcond_for(solver: str) -> float:
    return 1e-6 if solver == "gram" else 1e-15


def time_fit(specs, x, y, solver):
    net = zorb.build_network(specs, x.shape[1:], output_dim=y.shape[1], seed=0)
    _, cold = zorb.fit(net, x, y, solver=solver, rcond=rcond_for(solver))
    start = time.perf_counter()
    _, warm = zorb.fit(net, x, y, solver=solver, rcond=rcond_for(solver))
    return time.perf_counter() - start, cold.compile_seconds, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows for the dense network")
    parser.add_argument("--images", type=int, default=1_000, help="images for the conv network")
    parser.add_argument("--solvers", default="svd,qr,gram")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    results = {}
    cases = [("mnist_6", dense_specs(MNIST_6), rng.random((args.rows, 784))),
             ("conv_dense", CONV_DENSE, rng.random((args.images, 28, 28, 1)))]
    for name, specs, x in cases:
        y = np.eye(10)[rng.integers(0, 10, len(x))]
        for solver in args.solvers.split(","):
            seconds, compile_seconds, report = time_fit(specs, x, y, solver)
            solve = sum(r.solve_seconds for r in report.layers)
            target = sum(r.target_seconds for r in report.layers)
            forward = sum(r.forward_seconds for r in report.layers)
            print(f"{name:10s} N={len(x):6d} {solver:4s}: fit {seconds:7.2f} s (solve {solve:.2f}, targets "
                  f"{target:.2f}, forward {forward:.2f}; compile {compile_seconds:.2f} s on the first fit)")
            results[f"{name}_{solver}_s"] = round(seconds, 3)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    results["peak_rss_gib"] = round(peak_gib, 2)
    print(" ".join(f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
