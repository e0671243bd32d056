"""scripts/benchmarks/startup.py --quick: six runs (default and iris: cold, warm, and warm
writing its MLflow run itself) in its own store and cache; the breakdown it prints is the
runs' own timing metrics."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner_fixtures import cli_env, runs_of

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "benchmarks" / "startup.py"


@pytest.mark.slow
def test_quick_startup_breakdown(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--workdir", str(tmp_path)], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr
    runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [run.info.status for run in runs] == ["FINISHED"] * 6
    assert [run.data.params["dataset.name"] for run in runs] == ["mnist_5k"] * 3 + ["iris"] * 3
    assert [run.data.tags["zorb.mlflow_writer"] for run in runs] == ["process", "process", "run"] * 2
    printed = [line for line in done.stdout.splitlines() if re.match(r"\s+(cold|warm|self)\s+wall", line)]
    assert len(printed) == 6
    for line, run in zip(printed, runs):
        figures = dict(re.findall(r"(\w+) +(-?\d+\.\d+)", line.split("=", 1)[1]))
        for phase, key in (("imports", "startup_seconds"), ("store", "store_seconds"), ("fit", "fit_seconds"),
                           ("compile", "compile_seconds"), ("logging", "logging_seconds")):
            assert float(figures[phase]) == pytest.approx(run.data.metrics[key], abs=0.006)
    assert "warm compile / cold compile" in done.stdout and "iris run: warm wall" in done.stdout
    floor = dict(re.findall(r"(import [\w.]+(?: \+ [\w ]+)?) (\d+\.\d+)", done.stdout.split("floor", 1)[1]))
    assert set(floor) == {"import jax.numpy", "import mlflow + open its SQLite store"}
    assert all(float(seconds) > 0 for seconds in floor.values())
    # the warm runs found what the cold ones left: parsed datasets and compiled programs
    assert (tmp_path / "cache" / "data" / "mnist_5k-seed0" / "x_train.npy").is_file()
    assert any((tmp_path / "cache" / "jax").iterdir())


@pytest.mark.slow
def test_sweep_overhead_split_reads_the_sweeps_runs(tmp_path):
    """The ``--full`` overhead split on a 3-job sweep run by one process (the basic launcher):
    one worker, two gaps between its runs, and the time inside the runs beside their compute
    bounded by the runs' own durations and containing their MLflow writes."""
    import importlib.util

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "dataset=iris", "network=iris", "seed=0,1,2",
                           "hydra/launcher=basic", "tracking.experiment=paper_a", f"tracking.uri={uri}",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    spec = importlib.util.spec_from_file_location("startup_benchmark", SCRIPT)
    startup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(startup)
    split = startup.sweep_overhead(startup.runs_of(tmp_path, "paper_a", 1000))
    runs = sorted((run for run in runs_of(uri, "paper_a") if "fit_seconds" in run.data.metrics),
                  key=lambda run: run.info.start_time)
    assert split["runs"] == len(runs) == 3 and split["workers"] == 1
    gaps = [(b.info.start_time - a.info.end_time) / 1000 for a, b in zip(runs, runs[1:])]
    assert all(gap >= 0 for gap in gaps)
    assert split["between"] == pytest.approx(sum(gaps)) and split["median_gap"] == pytest.approx(sum(gaps) / 2)
    durations = sum((run.info.end_time - run.info.start_time) / 1000 for run in runs)
    logging = sum(run.data.metrics["logging_seconds"] for run in runs)
    assert split["logging"] == pytest.approx(logging) and 0 < logging <= split["inside"] < durations
