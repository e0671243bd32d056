"""The fault suite: signals and kill -9 sent to a real ``python run.py`` mid-fit, kill -9 of
a joblib sweep's launching process, an unreachable or read-only store, a foreign Hydra
callback. Every run ends FINISHED, FAILED or KILLED (or is reaped so), and what the user
sees is one line, never a traceback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest
from runner_fixtures import ROOT, RUN_PY, cli_env, client, run_cli, runs_of, store, template_store  # noqa: F401

from zorb.runner import lifecycle

pytestmark = pytest.mark.slow

# An Adam fit that runs for hours, in compiled calls of 500 steps, so a signal is handled
# within a fraction of a second of arriving.
LONG_FIT = ["dataset=iris", "network=iris", "method=adam", "method.steps=100000000", "method.eval_every=500"]


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, str(RUN_PY), *args], cwd=cwd, env=cli_env(), stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def fitting(log: Path) -> bool:
    return " - fitting " in log.read_text()


def stop_group(process: subprocess.Popen) -> None:
    """Kill what the test started and is still running (its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def reap(uri: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "runs.py"), "reap", "--tracking-uri", uri, *extra],
                          capture_output=True, text=True, timeout=120, env=cli_env(), check=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_mid_fit_ends_the_run_killed(store, tmp_path, signum):  # noqa: F811
    log = tmp_path / "out.log"
    process = start([*LONG_FIT, f"tracking.uri={store}"], tmp_path, log)
    try:
        wait_for(lambda: fitting(log), 240, "the fit to start")
        os.kill(process.pid, signum)
        try:
            status = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after {signum.name}; it printed:\n{log.read_text()[-3000:]}")
    finally:
        stop_group(process)
    output = log.read_text()
    assert status == 128 + signum, output
    assert "Traceback" not in output, output
    name = "interrupted (SIGINT)" if signum == signal.SIGINT else f"stopped by {signum.name}"
    assert output.endswith(f"{name}: the run is marked KILLED\n"), output[-500:]
    (run,) = runs_of(store)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags["zorb.stopped_by"] == signum.name
    assert run.data.tags["zorb.pid"] == str(process.pid)


def test_ctrl_c_in_a_terminal_ends_the_run_killed_through_its_writer(store, tmp_path):  # noqa: F811
    """A terminal's Ctrl-C signals the whole foreground process group: the run and its MLflow
    writer process. The writer ignores it and writes the run's end that the run sends."""
    log = tmp_path / "out.log"
    process = start([*LONG_FIT, f"tracking.uri={store}"], tmp_path, log)
    try:
        wait_for(lambda: fitting(log), 240, "the fit to start")
        (writer,) = psutil.Process(process.pid).children()
        os.killpg(process.pid, signal.SIGINT)
        try:
            status = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after Ctrl-C; it printed:\n{log.read_text()[-3000:]}")
        writer.wait(timeout=30)
    finally:
        stop_group(process)
    output = log.read_text()
    assert status == 130 and output.endswith("interrupted (SIGINT): the run is marked KILLED\n"), output[-500:]
    assert "Traceback" not in output, output
    (run,) = runs_of(store)
    assert run.info.status == "KILLED" and run.data.tags["zorb.stopped_by"] == "SIGINT"
    assert run.data.tags["zorb.mlflow_writer"] == "process"


def test_kill_9_of_the_run_alone_is_closed_killed_by_its_writer_process(store, tmp_path):  # noqa: F811
    log = tmp_path / "out.log"
    process = start([*LONG_FIT, f"tracking.uri={store}"], tmp_path, log)
    try:
        wait_for(lambda: fitting(log), 240, "the fit to start")
        (writer,) = psutil.Process(process.pid).children()
        process.kill()
        process.wait(timeout=30)
        writer.wait(timeout=60)  # it reads the end of its pipe, closes the run and exits
    finally:
        stop_group(process)
    (run,) = runs_of(store)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags["error"] == "the run's process ended without ending its run (killed by SIGKILL, or crashed)"
    assert run.data.tags["zorb.pid"] == str(process.pid) and run.data.tags["zorb.mlflow_writer"] == "process"
    assert "no RUNNING run has lost its process" in reap(store).stdout


def test_kill_9_mid_fit_is_reaped_killed(store, tmp_path):  # noqa: F811
    log = tmp_path / "out.log"
    process = start([*LONG_FIT, f"tracking.uri={store}"], tmp_path, log)
    try:
        wait_for(lambda: fitting(log), 240, "the fit to start")
        os.killpg(process.pid, signal.SIGKILL)  # the run's process and its MLflow writer, as SLURM's last word
        process.wait(timeout=30)
    finally:
        stop_group(process)
    (run,) = runs_of(store)
    assert run.info.status == "RUNNING"  # nothing was left to close it
    planned = reap(store, "--dry-run")
    assert planned.returncode == 0 and f"{run.info.run_id}" in planned.stdout and "would mark KILLED" in planned.stdout
    assert runs_of(store)[0].info.status == "RUNNING"
    done = reap(store)
    assert done.returncode == 0, done.stderr
    (run,) = runs_of(store)
    assert run.info.status == "KILLED"
    assert run.data.tags["zorb.reaped"].startswith(f"process {process.pid} on ")
    assert "no RUNNING run has lost its process" in reap(store).stdout


def test_kill_9_of_a_joblib_sweeps_launcher_stops_its_workers(store, tmp_path):  # noqa: F811
    log = tmp_path / "out.log"
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *LONG_FIT, "seed=0,1",
             f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    process = start(sweep, tmp_path, log)

    def what_they_printed() -> str:
        logs = [log, *sorted((tmp_path / "sweep").glob("*/run.log"))]
        return "\n".join(f"--- {path.name}:\n{path.read_text()[-3000:]}" for path in logs if path.exists())

    try:
        def both_fitting() -> bool:
            logs = list((tmp_path / "sweep").glob("*/run.log"))
            return len(logs) == 2 and all(fitting(path) for path in logs)

        wait_for(both_fitting, 300, "both jobs to start fitting")
        children = [r for r in runs_of(store) if "mlflow.parentRunId" in r.data.tags]
        workers = [int(r.data.tags["zorb.pid"]) for r in children]
        assert len(workers) == 2 and process.pid not in workers
        process.kill()
        process.wait(timeout=30)
        killed = time.monotonic()
        try:
            wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                     for pid in workers), 30, "the workers to stop")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{what_they_printed()}") from None
        outlived = time.monotonic() - killed
    finally:
        stop_group(process)
    assert outlived < lifecycle.STOP_GRACE_SECONDS + 5, (outlived, what_they_printed())
    done = reap(store)
    assert done.returncode == 0, done.stderr
    runs = runs_of(store)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    # closed by the last job to record itself (or, had no job lived to, by the reaper)
    assert parent.info.status == "KILLED" and parent.data.tags["zorb.pid"] == str(process.pid)
    forced = "has not stopped" in log.read_text()
    for child in (r for r in runs if "mlflow.parentRunId" in r.data.tags):
        assert child.info.status == "KILLED"
        if child.data.tags.get(lifecycle.STOPPED_BY) != "SIGTERM":
            # the worker's job did not stop in its grace time: it exited by force, with its
            # threads' stacks, and the reaper closed its run; say where it was stuck
            assert forced and lifecycle.REAPED in child.data.tags, what_they_printed()
            warnings.warn(f"a worker exited by force:\n{what_they_printed()}", stacklevel=1)


def test_a_worker_that_does_not_stop_exits_by_force_with_its_stacks(tmp_path):
    # a main thread that ignores SIGTERM stands for one stuck where no signal handler runs
    script = """
import signal, subprocess, sys, time
from zorb.runner import lifecycle
lifecycle.PARENT_POLL_SECONDS, lifecycle.STOP_GRACE_SECONDS = 0.1, 1.0
launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
signal.signal(signal.SIGTERM, lambda *_: None)
lifecycle.watch_parent(launcher.pid, lifecycle.start_time(launcher.pid))
launcher.kill()
launcher.wait()
def stuck_in_here():
    while True:
        time.sleep(0.05)
stuck_in_here()
"""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                            timeout=60, check=False)
    wall = time.monotonic() - started
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "this job has not stopped 1 s after SIGTERM; exiting now" in result.stderr
    assert "stuck_in_here" in result.stderr  # the main thread's stack names where it was
    assert 1.0 < wall < 30, wall


def test_an_unreachable_tracking_server_fails_in_seconds(tmp_path):
    started = time.monotonic()
    result = run_cli("dataset=iris", "network=iris", "tracking.uri=http://127.0.0.1:9", cwd=tmp_path)
    wall = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        "the MLflow tracking server http://127.0.0.1:9 does not answer"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert wall < 60, wall  # start-up included; MLflow's own retries took ~250 s
    env = cli_env(MLFLOW_TRACKING_URI="foo://bar")
    result = run_cli("dataset=iris", "network=iris", cwd=tmp_path, env=env)
    assert result.returncode == 1 and "whose scheme 'foo' MLflow cannot open" in result.stderr.splitlines()[-1]


def read_only(*command: str, folder: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` with ``folder`` mounted read-only (a user and mount namespace)."""
    mount = f"mount --bind -o ro '{folder}' '{folder}' && exec \"$@\""
    return subprocess.run(["unshare", "-rm", "sh", "-c", mount, "sh", *command], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_read_only_store_is_read_and_refuses_writes(store, tmp_path):  # noqa: F811
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False).returncode:
        pytest.skip("needs unshare -rm (user and mount namespaces) to mount a folder read-only")
    result = run_cli("-m", "dataset=iris", "network=iris", "seed=0,1", f"tracking.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    mlflow_client = client(store)
    parent = next(r for r in runs_of(store) if "mlflow.parentRunId" not in r.data.tags)
    mlflow_client.set_tag(parent.info.run_id, "zorb.experiment", "paper_a")  # what tables.py looks up
    folder = Path(store[len("sqlite:///"):]).parent
    (folder / "mlflow.db-zorb.lock").unlink()
    before = sorted(p.name for p in folder.iterdir())

    tables = read_only(sys.executable, str(ROOT / "scripts" / "tables.py"), "paper_a", "--tracking-uri", store,
                       "--out-dir", str(tmp_path / "tables"), folder=folder, cwd=tmp_path)
    assert tables.returncode == 0, tables.stderr
    assert "cannot be written: the tables are not logged" in tables.stdout
    assert "| iris" in (tmp_path / "tables" / "paper_a.md").read_text()
    planned = read_only(sys.executable, str(ROOT / "scripts" / "runs.py"), "reap", "--dry-run", "--tracking-uri",
                        store, folder=folder, cwd=tmp_path)
    assert planned.returncode == 0 and "no RUNNING run has lost its process" in planned.stdout, planned.stderr
    run = read_only(sys.executable, str(RUN_PY), "dataset=iris", "network=iris", f"tracking.uri={store}",
                    folder=folder, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1].startswith(f"cannot write the MLflow store {folder / 'mlflow.db'} "
                                                  f"(Read-only file system)"), run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing created beside the store


def test_a_foreign_hydra_callback_is_refused_before_anything_runs(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    result = run_cli("dataset=iris", "network=iris", "tracking=off", "+hydra.callbacks.x._target_=builtins.open",
                     f"+hydra.callbacks.x.file={victim}", "+hydra.callbacks.x.mode=w", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "hydra.callbacks.x asks Hydra to instantiate 'builtins.open', but zorb only runs its own callbacks "
        "(zorb.runner.callbacks.DataCheckCallback, zorb.runner.callbacks.MLflowSweepCallback, without options): "
        "remove it")
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "outputs").exists()
