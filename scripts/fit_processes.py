"""One ZORB fit over a data set that several processes share: each process reads only its
own rows of ``X.npy`` / ``Y.npy`` (memory-mapped) and the solves reduce across processes
(``zorb.fit(..., processes=True)`` over ``jax.distributed`` with gloo CPU collectives), so
no machine ever holds the whole data set. Every process gets the same weights; process 0
writes them.

    # four processes under SLURM (one task each; the first task's node coordinates)
    srun -n 4 python scripts/fit_processes.py --x X.npy --y Y.npy --network iris \\
        --solver qr --chunk-rows 100000 --coordinator <first node>:61234 --out model.npz
    # or on one machine, one command per process
    python scripts/fit_processes.py ... --processes 2 --process-id 0 --coordinator 127.0.0.1:61234 &
    python scripts/fit_processes.py ... --processes 2 --process-id 1 --coordinator 127.0.0.1:61234

``--network`` names a file of conf/network/ (or gives a path to one); the network is built
from ``--seed`` as ``run.py`` builds it. Under ``srun`` the process count and index come from
``SLURM_NTASKS`` and ``SLURM_PROCID``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a file (python scripts/fit_processes.py), the repository root is not on sys.path.
sys.path.insert(0, str(ROOT))


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--x", required=True, type=Path, help="inputs, .npy of shape (N, ...)")
    parser.add_argument("--y", required=True, type=Path, help="targets, .npy of shape (N, outputs)")
    parser.add_argument("--network", required=True, help="a name in conf/network/ or a path to such a YAML file")
    parser.add_argument("--solver", default="qr", choices=("qr", "gram"))
    parser.add_argument("--rcond", type=float, default=None, help="default: the network file's, else 1e-15")
    parser.add_argument("--ridge", type=float, default=None, help="default: the network file's, else 0")
    parser.add_argument("--chunk-rows", type=int, default=None, help="stream each process's rows in chunks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coordinator", required=True, help="host:port of process 0's coordination service")
    parser.add_argument("--processes", type=int, default=int(os.environ.get("SLURM_NTASKS", "1")))
    parser.add_argument("--process-id", type=int, default=int(os.environ.get("SLURM_PROCID", "0")))
    parser.add_argument("--out", type=Path, default=None, help="process 0 writes the trained network here")
    return parser.parse_args(argv)


def share(rows: int, processes: int, index: int) -> slice:
    """The rows of process ``index``: consecutive, as even as they divide."""
    bounds = [round(rows * k / processes) for k in range(processes + 1)]
    return slice(bounds[index], bounds[index + 1])


def network_spec(name: str) -> dict:
    from omegaconf import OmegaConf

    path = Path(name) if name.endswith((".yaml", ".yml")) else ROOT / "conf" / "network" / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"no network file {path}: give a name in conf/network/ or a path to a YAML file")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def main(argv=None) -> int:
    args = arguments(argv)
    if not 0 <= args.process_id < args.processes:
        raise SystemExit(f"--process-id must be between 0 and {args.processes - 1}, got {args.process_id}")
    spec = network_spec(args.network)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, num_processes=args.processes, process_id=args.process_id)
    import numpy as np

    import zorb

    x_all, y_all = np.load(args.x, mmap_mode="r"), np.load(args.y, mmap_mode="r")
    if len(x_all) != len(y_all):
        raise SystemExit(f"{args.x} has {len(x_all)} rows but {args.y} has {len(y_all)}")
    mine = share(len(x_all), args.processes, args.process_id)
    # only this process's rows are read (the slices of a memmap stay on disk until used)
    x, y = x_all[mine], y_all[mine]
    net = zorb.build_network(spec["layers"], tuple(x.shape[1:]), output_dim=int(y.shape[1]), seed=args.seed)
    rcond = args.rcond if args.rcond is not None else float(spec.get("rcond", 1e-15))
    ridge = args.ridge if args.ridge is not None else float(spec.get("ridge", 0.0))
    try:
        trained, report = zorb.fit(net, x, y, solver=args.solver, rcond=rcond, ridge=ridge, seed=args.seed,
                                   chunk_rows=args.chunk_rows, processes=True)
    except zorb.ZorbError as error:  # the same settings in every process: each stops with the sentence
        raise SystemExit(str(error)) from None
    summary = {"process": args.process_id, "processes": args.processes, "rows": [mine.start, mine.stop],
               "fit_seconds": report.fit_seconds, "ranks": [layer.rank for layer in report.layers]}
    print(json.dumps(summary), flush=True)
    if args.out is not None and args.process_id == 0:
        zorb.save(trained, args.out)
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
