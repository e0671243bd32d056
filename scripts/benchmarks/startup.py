"""How long a user waits around the fit: each command run twice (cold, then warm) in a fresh
MLflow store and cache, the wall time measured here and split with the run's own timing
metrics (startup_seconds, data_seconds, store_seconds, compile_seconds, fit_seconds,
eval_seconds, logging_seconds), then the ratios against the start-up targets.

    python scripts/benchmarks/startup.py            # python run.py, and dataset=iris network=iris
    python scripts/benchmarks/startup.py --quick    # the same runs shrunk by profile=smoke (CI)
    python scripts/benchmarks/startup.py --full     # also python run.py -m experiment=paper_a (350 runs)

Each command's warm run is also timed with ``ZORB_WRITER_PROCESS=0``: the run writes its
MLflow run itself instead of through its writer process (zorb/runner/writer.py). It also times
the libraries' floor: a bare interpreter, ``import jax.numpy``, and importing MLflow and
opening the store (each in its own process).

Targets (on an idle machine): the default run's warm wall time at most its fit + 3 s; the
iris run's warm wall time at most 3 s; a warm run's compile time at most 10% of the cold
run's; the paper_a sweep within 3 minutes. Timings vary with the machine's load: the
script prints the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = ROOT / "run.py"
COMMANDS = {"default": [], "iris": ["dataset=iris", "network=iris"]}
# The run's own timing metrics, in the order a run goes through them (zorb/runner/job.py, experiment.py).
PHASES = {"imports": "startup_seconds", "store": "store_seconds", "data": "data_seconds",
          "compile": "compile_seconds", "fit": "fit_seconds", "eval": "eval_seconds",
          "logging": "logging_seconds"}
DEFAULT_SLACK_SECONDS = 3.0
IRIS_WALL_SECONDS = 3.0
COMPILE_RATIO = 0.10
SWEEP_SECONDS = 180.0


def run(arguments: list[str], workdir: Path, **extra_env: str) -> tuple[float, float]:
    """``python run.py <arguments>`` in ``workdir`` with its store and cache there:
    ``(wall seconds, CPU seconds)``; the CPU time, user and system (of the run and its MLflow
    writer process), varies less with the machine's load than the wall time."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR", "ZORB_WRITER_PROCESS")}
    env.update(extra_env)
    command = [sys.executable, str(RUN_PY), *arguments, f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
               f"cache.dir={workdir / 'cache'}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def runs_of(workdir: Path, experiment: str, count: int) -> list:
    """The ``count`` latest runs of ``experiment`` with a fit (a sweep's jobs, not its parent
    run), oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "metrics.fit_seconds >= 0", max_results=count,
                              order_by=["attributes.start_time DESC"])
    return list(reversed(runs))


def metrics_of(workdir: Path, experiment: str, count: int) -> list[dict[str, float]]:
    """The metrics of the ``count`` latest runs of ``experiment`` with a fit, oldest first."""
    return [run.data.metrics for run in runs_of(workdir, experiment, count)]


FITS = ("fit_seconds", "compile_seconds", "val_fit_seconds")
"""A job's fits: the fit, its compilation and the validation refit."""
CURVES = "curve_seconds"
"""Adam's curve measurements, off its training clock."""


def compute_seconds(metrics: dict[str, float]) -> tuple[float, float]:
    """A job's own compute: its fits (``FITS``) and its curve measurements."""
    return sum(metrics.get(key, 0.0) for key in FITS), metrics.get(CURVES, 0.0)


def sweep_overhead(runs: list) -> dict[str, float]:
    """Where a sweep's time outside its jobs' compute goes, from its job runs (``runs_of``):
    the worker processes that ran them (the ``zorb.pid`` tag: more than the launcher's slots
    where a worker was replaced), the time between one run's end and the next run's start in
    the same worker, and the time inside the runs beside their compute (``compute_seconds``),
    of which the MLflow writes (``logging_seconds``)."""
    from statistics import median

    by_worker: dict[str, list] = {}
    for run in runs:  # oldest first, so each worker's list is in order
        by_worker.setdefault(run.data.tags.get("zorb.pid", ""), []).append(run)
    gaps = [(later.info.start_time - earlier.info.end_time) / 1000
            for worker_runs in by_worker.values() for earlier, later in zip(worker_runs, worker_runs[1:])]
    inside = sum((run.info.end_time - run.info.start_time) / 1000 - sum(compute_seconds(run.data.metrics))
                 for run in runs)
    return {"runs": len(runs), "workers": len(by_worker), "between": sum(gaps),
            "median_gap": median(gaps) if gaps else 0.0, "inside": inside,
            "logging": sum(run.data.metrics.get("logging_seconds", 0.0) for run in runs)}


FLOOR = {  # what any tracked run's process pays before zorb does anything of its own
    "python": "pass",
    "import jax.numpy": "import jax.numpy",
    "import mlflow + open its SQLite store": (
        "import sys; from mlflow.tracking import MlflowClient; "
        "MlflowClient(tracking_uri=sys.argv[1]).search_experiments(max_results=1)"),
}


def floor(workdir: Path) -> dict[str, float]:
    """Wall seconds of a bare interpreter, of importing JAX, and of importing MLflow and
    opening an existing SQLite store (each the best of 2, in its own process): the libraries'
    share of a run's start-up, which no change to zorb removes."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    seconds = {}
    for name, code in FLOOR.items():
        times = []
        for _ in range(2):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, uri], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        seconds[name] = min(times)
    return seconds


def breakdown(name: str, timing: tuple[float, float], metrics: dict[str, float]) -> str:
    wall, cpu = timing
    parts = [f"{phase} {metrics.get(key, float('nan')):6.2f}" for phase, key in PHASES.items()]
    other = wall - sum(metrics.get(key, 0.0) for key in PHASES.values())
    return f"  {name:<5} wall {wall:6.2f} (cpu {cpu:6.2f}) = " + ", ".join(parts) + f", other {other:5.2f}"


def verdict(label: str, value: float, limit: float, unit: str = "s") -> str:
    mark = "ok" if value <= limit else "over"
    return f"  {label:<44} {value:8.2f} {unit} (target <= {limit:.2f} {unit}, {value / limit:5.2f}x) {mark}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shrink every run with profile=smoke; no sweep")
    size.add_argument("--full", action="store_true", help="also time python run.py -m experiment=paper_a")
    parser.add_argument("--workdir", type=Path,
                        help="keep the store, cache and outputs here (default: a temporary folder)")
    args = parser.parse_args()
    extra = ["profile=smoke"] if args.quick else []
    with tempfile.TemporaryDirectory(prefix="zorb-startup-") as temporary:
        workdir = (args.workdir or Path(temporary)).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"zorb start-up, {'quick (profile=smoke)' if args.quick else 'as a user runs it'}; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; seconds")
        results = {}
        for name, arguments in COMMANDS.items():
            timings = [run(arguments + extra, workdir) for _ in ("cold", "warm")]
            # the same warm run writing its MLflow run itself, without the writer process
            timings.append(run(arguments + extra, workdir, ZORB_WRITER_PROCESS="0"))
            cold, warm, itself = metrics_of(workdir, "zorb", 3)
            results[name] = (timings, cold, warm)
            print(f"python run.py {' '.join(arguments + extra)}".rstrip())
            print(breakdown("cold", timings[0], cold))
            print(breakdown("warm", timings[1], warm))
            print(breakdown("self", timings[2], itself) + "  (warm, ZORB_WRITER_PROCESS=0: the run writes itself)")
        print("the libraries' floor (own process each, best of 2): " + ", ".join(
            f"{name} {value:.2f}" for name, value in floor(workdir).items()))
        print("targets (warm = the second run, same shapes, same cache):")
        timings, _, warm = results["default"]
        print(verdict("default run: warm wall - fit", timings[1][0] - warm["fit_seconds"], DEFAULT_SLACK_SECONDS))
        print(verdict("iris run: warm wall", results["iris"][0][1][0], IRIS_WALL_SECONDS))
        for name, (_, cold, warm) in results.items():
            ratio = warm["compile_seconds"] / cold["compile_seconds"] if cold["compile_seconds"] else float("nan")
            print(verdict(f"{name} run: warm compile / cold compile", 100 * ratio, 100 * COMPILE_RATIO, "%"))
        if args.full:
            wall, cpu = run(["-m", "experiment=paper_a"], workdir)
            runs = runs_of(workdir, "paper_a", 1000)
            jobs = [run.data.metrics for run in runs]
            print(f"python run.py -m experiment=paper_a: {len(jobs)} runs, wall {wall:.1f} s, cpu {cpu:.1f} s")
            parts = [compute_seconds(metrics) for metrics in jobs]
            fits, curves = sum(fit for fit, _ in parts), sum(curve for _, curve in parts)
            mean = {key: sum(m.get(key, 0.0) for m in jobs) / max(len(jobs), 1) for key in PHASES.values()}
            count = max(len(jobs), 1)
            print(f"  per job: wall {wall / count:.3f} s, fits and compiles {fits / count:.3f} s; "
                  + ", ".join(f"{phase} {mean[key]:.3f}" for phase, key in PHASES.items() if phase != "imports"))
            # what no per-job saving removes: the jobs' own compute, spread over one job per core
            workers = os.cpu_count() or 1
            print(f"  the jobs' compute: fits, validation refits and compiles {fits:.1f} s, Adam's curve "
                  f"measurements {curves:.1f} s; over {workers} workers at least {(fits + curves) / workers:.1f} s "
                  f"of the wall time, the rest ({wall - (fits + curves) / workers:.1f} s) the jobs' overhead")
            split = sweep_overhead(runs)
            print(f"  the overhead: {split['workers']} worker processes ran the {split['runs']} runs; "
                  f"{split['between']:.1f} s between a worker's runs (median {split['median_gap']:.3f} s), "
                  f"{split['inside']:.1f} s inside the runs beside their compute, {split['logging']:.1f} s of it "
                  f"the MLflow writes (in all, over the workers' slots)")
            print(verdict("paper_a sweep: wall", wall, SWEEP_SECONDS))


if __name__ == "__main__":
    main()
