#!/usr/bin/env python
"""Benchmark ZORB on the paper's shapes: fit time per solver against this machine's
flop-bound limit, peak memory, Adam's time to the same training error, and the authors' code
beside zorb.

    python scripts/bench.py                  # GEMM rate, mnist_6 + mnist_11 on 10,000 rows, conv1 on 1,280 images, Adam
    python scripts/bench.py --quick          # every section of the default run at tiny sizes, plus a tiny --memory
    python scripts/bench.py --memory         # mnist_6 on 1,000,000 uint8 rows streamed with chunk_rows
    python scripts/bench.py --paper-shapes --authors-code PATH   # zorb beside the authors' JAX code, one pinned core
    python scripts/bench.py --threads        # OpenBLAS / XLA thread settings, each in a fresh process
    python scripts/bench.py --sections kernels   # each native kernel beside its pure-JAX path
    python scripts/bench.py --startup        # where a run's start-up time goes (scripts/benchmarks/startup.py)
    python scripts/bench.py --sections dense --solvers gram --networks mnist_6 --warm-fits 2

Each section is a module of scripts/benchmarks/ (common: workers, GEMM rate, memory; flops:
the flop model; dense, conv, adam, memory, authors, kernels). Every measurement runs in a fresh
worker process. The flop-bound limit is the fit's flops (``benchmarks/flops.py``: the gram
route as it runs, at the ranks each solve kept) at the float64 GEMM rate measured beside the
fits; ``limit_ratio`` = fit time / limit. Inputs are random with MNIST's / CIFAR's shapes
unless ``--dataset`` names real data (a fit's cost depends on shapes, not values). The LAST
line is machine-readable ``key=value`` pairs (all values numeric).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path[1:1] = [str(SCRIPTS.parent)]  # this checkout's zorb, after scripts/ (the benchmarks package)

from benchmarks import common  # noqa: E402
from benchmarks.adam import adam_section  # noqa: E402
from benchmarks.authors import authors_section, package_root  # noqa: E402
from benchmarks.conv import conv_section  # noqa: E402
from benchmarks.dense import dense_section, threads_section  # noqa: E402
from benchmarks.kernels import kernels_section  # noqa: E402
from benchmarks.memory import memory_section  # noqa: E402

SECTIONS = {"dense": dense_section, "conv": conv_section, "adam": adam_section, "memory": memory_section,
            "paper": authors_section, "threads": threads_section, "kernels": kernels_section}
STARTUP = SCRIPTS / "benchmarks" / "startup.py"


def startup_section(args) -> int:
    """Run the start-up breakdown (its own script) and pass its output through."""
    if not STARTUP.is_file():
        print(f"the start-up benchmark is not in this checkout ({STARTUP.relative_to(SCRIPTS.parent)} is missing)")
        return 1
    root = str(SCRIPTS.parent)  # this checkout's zorb, as for every other section
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(STARTUP)] + (["--quick"] if args.quick else []), cwd=root,
                          env=env).returncode


def real_dataset(data_dir: str) -> str:
    """``mnist`` or ``fashion_mnist`` when its idx files are found (in ``data_dir``, or Debian's
    Fashion-MNIST package), else ``random``."""
    from zorb.data.images import check_image_files
    from zorb.errors import ZorbError

    for name in ("mnist", "fashion_mnist"):
        try:
            check_image_files(name, Path(data_dir))
            return name
        except ZorbError:
            continue
    return "random"


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few Adam steps, every section of the default run plus a tiny --memory")
    parser.add_argument("--memory", action="store_true", help="only the streamed 1M-row fit (and the GEMM rate)")
    parser.add_argument("--paper-shapes", action="store_true", help="only the authors' shapes (and the GEMM rate)")
    parser.add_argument("--threads", action="store_true", help="only the thread-setting comparison (and GEMM)")
    parser.add_argument("--startup", action="store_true", help="only the start-up breakdown")
    parser.add_argument("--sections", help=f"comma list of {','.join(SECTIONS)} (overrides the modes above)")
    parser.add_argument("--rows", type=int, help="rows for the dense networks (default 10,000); with --memory, "
                                                 "the rows of the streamed fit (default 1,000,000)")
    parser.add_argument("--images", type=int, help="images for conv1 (default 1,280)")
    parser.add_argument("--solvers", default="svd,qr,gram")
    parser.add_argument("--networks", help="comma list of mnist_6, mnist_11, conv1 (default all three; quick: "
                                           "mnist_6,conv1)")
    parser.add_argument("--dataset", default="auto", choices=("auto", "random", "mnist", "fashion_mnist"),
                        help="inputs of the dense networks: random rows, or real data from --data-dir; auto "
                             "(default): MNIST if its files are there, else Fashion-MNIST, else random; "
                             "--quick: random")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--adam-steps", type=int, help="Adam's step budget (default 20,000; quick 50)")
    parser.add_argument("--eval-rows", type=int, default=2_000, help="rows Adam's error curve is measured on")
    parser.add_argument("--curve-points", type=int, default=100, help="Adam evaluations over its run")
    parser.add_argument("--chunk-rows", type=int, default=20_000, help="chunk size of the streamed fit")
    parser.add_argument("--memory-solver", default="gram", choices=("qr", "gram"))
    parser.add_argument("--authors-code", metavar="PATH", help="a checkout of the paper authors' JAX code, run "
                                                               "beside zorb in the paper section")
    parser.add_argument("--authors-rows", help="mnist_6 rows of the paper section (default 10000,60000; quick 1000)")
    parser.add_argument("--authors-images", help="images for the authors' README conv network (default 1000; "
                                                 "quick 100)")
    parser.add_argument("--authors-cores", type=int, default=1, help="cores both sides are pinned to (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-fits", type=int, help="timed fits after the compiling one, best reported "
                                                       "(default 5; quick 1)")
    parser.add_argument("--openblas-coretype", default="environment", metavar="{environment,auto,NAME}",
                        help="OpenBLAS kernels for every measurement: as the environment sets them (default), auto "
                             "(an OPENBLAS_CORETYPE in the environment is dropped), or a core name such as SkylakeX")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args, []
    if args.sections:
        sections = comma_list(args.sections)
        bad = sorted(set(sections) - set(SECTIONS) - {"startup"})
        if bad:
            parser.error(f"unknown section {bad[0]!r}: choose from {', '.join([*SECTIONS, 'startup'])}")
    elif args.memory or args.paper_shapes or args.threads or args.startup:
        sections = [s for s, on in (("memory", args.memory), ("paper", args.paper_shapes), ("threads", args.threads),
                                    ("startup", args.startup)) if on]
    else:
        sections = ["dense", "conv", "adam"] + (["memory"] if args.quick else [])
    if args.authors_code:
        package_root(args.authors_code)  # one sentence and exit 2 before any compute if it is not their code
    args.memory_rows = (args.rows if args.memory and args.rows else None) or (2_000 if args.quick else 1_000_000)
    if args.memory and args.rows and "dense" not in sections:
        args.rows = None
    if args.quick:
        args.chunk_rows = min(args.chunk_rows, 500)
        args.eval_rows = min(args.eval_rows, 200)
        args.curve_points = min(args.curve_points, 10)
    args.networks = comma_list(args.networks or ("mnist_6,conv1" if args.quick else "mnist_6,mnist_11,conv1"))
    args.solvers = comma_list(args.solvers)
    args.authors_rows = [int(r) for r in comma_list(args.authors_rows or ("1000" if args.quick else "10000,60000"))]
    args.authors_images = [int(r) for r in comma_list(args.authors_images or ("100" if args.quick else "1000"))]
    for name in args.networks:
        if name not in ("mnist_6", "mnist_11", "conv1"):
            parser.error(f"unknown network {name!r}: choose from mnist_6, mnist_11, conv1")
    for name in args.solvers:
        if name not in common.RCOND:
            parser.error(f"unknown solver {name!r}: choose from {', '.join(common.RCOND)}")
    if "conv1" not in args.networks and "conv" in sections:
        sections.remove("conv")
    args.warm_fits = args.warm_fits if args.warm_fits is not None else 1 if args.quick else 5
    if args.warm_fits < 1:
        parser.error("--warm-fits must be at least 1")
    if args.authors_cores < 1 or args.authors_cores > len(os.sched_getaffinity(0)):
        parser.error(f"--authors-cores must be between 1 and the {len(os.sched_getaffinity(0))} cores this process has")
    return args, sections


def main(argv=None) -> int:
    args, sections = parse_args(argv)
    if args.worker:
        common.worker_main(args.worker)
        return 0
    if "startup" in sections:
        status = startup_section(args)
        sections = [s for s in sections if s != "startup"]
        if not sections:
            return status
    if args.dataset == "auto":
        args.dataset = "random" if args.quick else real_dataset(args.data_dir)
    if args.openblas_coretype != "environment":
        common.WORKER_ENV["OPENBLAS_CORETYPE"] = None if args.openblas_coretype == "auto" else args.openblas_coretype
    results = common.Results(args)
    print(f"zorb benchmark: {os.cpu_count()} cores, python {sys.version.split()[0]}, sections {','.join(sections)}, "
          f"seed {args.seed}, load average {common.load_text()}; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')} XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')!r} "
          f"--openblas-coretype {args.openblas_coretype}", flush=True)
    started = time.perf_counter()
    for name, run in [("gemm", common.gemm_section)] + [(s, SECTIONS[s]) for s in SECTIONS if s in sections]:
        begun = time.perf_counter()
        run(results)
        print(f"(section {name} took {time.perf_counter() - begun:.0f} s)", flush=True)
    results.put("bench_s", time.perf_counter() - started)
    if common.OTHER_LOAD:
        load = common.OTHER_LOAD
        results.put("other_load_max_cores", max(load), 2)
        print(f"\nother processes kept up to {max(load):.2f} of {os.cpu_count()} cores busy during a measurement "
              f"(mean {sum(load) / len(load):.2f}): timings are comparable only near 0")
    print()
    print(results.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
