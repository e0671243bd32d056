"""Sweeps on a real (one-node) SLURM cluster into a real MLflow tracking server
(tests/cluster_fixtures.py): every job a SLURM array task, every run read back through the
server's API; time limits and ``scancel`` end runs KILLED with the reason; eight jobs
writing to the server at once lose nothing."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from cluster_fixtures import mlflow_server, slurm_cluster  # noqa: F401
from runner_fixtures import ROOT, RUN_PY, cli_env, client, logged_network, run_cli, runs_of, template_store  # noqa: F401

import zorb
from zorb.data import load_dataset

pytestmark = pytest.mark.slow

# one core and little memory per job: the node has the machine's cores, two jobs run at once
SLURM = ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
LONG_ADAM = ["dataset=iris", "method=adam", "method.steps=1000000000", "method.eval_every=2000"]
"""An Adam fit that runs for hours: the job SLURM ends."""


def launch_env(cluster) -> dict[str, str]:
    """The launching process's environment (sbatch passes it on to the jobs): the cluster's
    SLURM_CONF, and this checkout first on the path of the jobs' Python."""
    return cli_env(SLURM_CONF=cluster.env["SLURM_CONF"], PATH=cluster.env["PATH"], PYTHONPATH=str(ROOT))


def tracking(server, experiment: str) -> list[str]:
    return [f"tracking.uri={server.uri}", f"tracking.experiment={experiment}"]


def sweep_of(uri: str, experiment: str):
    runs = runs_of(uri, experiment)
    parents = [r for r in runs if r.data.tags.get("zorb.role") == "sweep"]
    assert len(parents) == 1, [(r.info.run_name, r.info.status) for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return parents[0], sorted(children, key=lambda r: int(r.data.tags["zorb.job_num"]))


def artifact_files(uri: str, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of the run, listed through the store's API."""
    found = set()
    for item in client(uri).list_artifacts(run_id, path):
        found |= artifact_files(uri, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_sweep_through_slurm_into_a_tracking_server(slurm_cluster, mlflow_server, tmp_path):
    sweep_dir = tmp_path / "multirun" / "sweep"
    done = run_cli(*SLURM, *tracking(mlflow_server, "slurm_sweep"), f"hydra.sweep.dir={sweep_dir}",
                   "dataset=iris,xor", "seed=0,1", cwd=tmp_path, env=launch_env(slurm_cluster), timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    parent, children = sweep_of(mlflow_server.uri, "slurm_sweep")
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 4
    assert [c.info.status for c in children] == ["FINISHED"] * 4
    assert sorted((c.data.params["dataset.name"], c.data.params["seed"]) for c in children) == \
        [("iris", "0"), ("iris", "1"), ("xor", "0"), ("xor", "1")]
    # each job ran as a task of one SLURM array, and SLURM's accounting saw each complete
    jobs = {c.data.tags["slurm.job_id"] for c in children}
    arrays = {job.split("_")[0] for job in jobs}
    assert len(jobs) == 4 and len(arrays) == 1
    slurm_cluster.wait_queue_empty()
    states = slurm_cluster.accounting(arrays.pop())
    assert sorted(states) == sorted(jobs) and set(states.values()) == {"COMPLETED"}, states
    for child in children:
        # task/none binds no cores: each task takes cpus_per_task of the node's cores itself
        assert child.data.tags["zorb.kernels.threads"] == "1" and len(child.data.tags["zorb.cores"].split(",")) == 1
        files = artifact_files(mlflow_server.uri, child.info.run_id)
        assert {"logs/run.log", "config.yaml", "spectra/summary.json"} <= files, files
        # the server keeps them under <artifacts destination>/<experiment id>/<run id>/artifacts/
        on_disk = mlflow_server.artifacts / child.info.experiment_id / child.info.run_id / "artifacts"
        assert (on_disk / "spectra" / "summary.json").stat().st_size > 0
    # the model read back from the server predicts the accuracy its run logged
    iris = next(c for c in children if c.data.params["dataset.name"] == "iris")
    net = logged_network(mlflow_server.uri, iris.info.run_id, tmp_path)
    data = load_dataset("iris", seed=int(iris.data.params["seed"]))
    predicted = zorb.predict(net, data.x_test).argmax(axis=1)
    assert np.mean(predicted == np.asarray(data.y_test).argmax(axis=1)) == pytest.approx(iris.data.metrics["test_accuracy"])

    # job logs: submitit's stdout/stderr per task in <sweep dir>/.submitit/<job id>/, Hydra's in <sweep dir>/<job num>/
    for child in children:
        job = child.data.tags["slurm.job_id"]
        out = sweep_dir / ".submitit" / job / f"{job}_0_log.out"
        assert out.is_file(), sorted(p.name for p in (sweep_dir / ".submitit").glob("*/*"))
        assert (sweep_dir / ".submitit" / job / f"{job}_0_log.err").is_file()
        num = child.data.tags["zorb.job_num"]
        assert f"MLflow run {child.info.run_id} FINISHED" in (sweep_dir / num / "run.log").read_text()


def running_job(uri: str, experiment: str, num: str) -> str | None:
    """The SLURM job id of sweep job ``num`` once its run is RUNNING on the server."""
    for run in runs_of(uri, experiment):
        if run.data.tags.get("zorb.job_num") == num and run.info.status == "RUNNING":
            return run.data.tags["slurm.job_id"]
    return None


def test_time_limit_and_scancel_end_runs_killed(slurm_cluster, mlflow_server, tmp_path):
    # job 0: a quick fit; jobs 1 and 2: Adam fits of hours. Once job 1 runs its time limit is
    # cut to one minute (SLURM ends it: submitit's SIGUSR2 signal_delay_s before the limit, then
    # SIGTERM at the limit, SIGKILL KillWait later); job 2 is cancelled with scancel (SIGTERM).
    experiment = "slurm_stopped"
    launcher = subprocess.Popen([sys.executable, str(RUN_PY), *SLURM, *tracking(mlflow_server, experiment),
                                 f"hydra.sweep.dir={tmp_path / 'sweep'}", *LONG_ADAM, "limits.steps=200,null,null"],
                                cwd=tmp_path, env=launch_env(slurm_cluster), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    limited = cancelled = None
    deadline = time.monotonic() + 300
    while limited is None or cancelled is None:  # both long jobs running (job 2 starts after job 0)
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[0][-3000:]
        limited = limited or running_job(mlflow_server.uri, experiment, "1")
        cancelled = cancelled or running_job(mlflow_server.uri, experiment, "2")
        time.sleep(1)
    slurm_cluster.command("scancel", cancelled)
    slurm_cluster.command("scontrol", "update", f"JobId={limited}", "TimeLimit=1")
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode != 0, output[-3000:]
    slurm_cluster.wait_queue_empty()

    parent, children = sweep_of(mlflow_server.uri, experiment)
    assert [c.data.tags["zorb.job_num"] for c in children] == ["0", "1", "2"]
    assert children[0].info.status == "FINISHED" and children[0].data.params["method.steps"] == "200"
    for child, job, signals in ((children[1], limited, {"SIGUSR2", "SIGTERM"}), (children[2], cancelled, {"SIGTERM"})):
        tags = child.data.tags
        assert child.info.status == "KILLED", (child.info.status, tags.get("error"), output[-3000:])
        assert tags["slurm.job_id"] == job and tags["zorb.stopped_by"] in signals
        assert tags["error"].startswith(f"stopped by {tags['zorb.stopped_by']}: SLURM job {job} ")
        assert child.info.end_time is not None and "logs/run.log" in artifact_files(mlflow_server.uri, child.info.run_id)
    states = slurm_cluster.accounting(limited.split("_")[0])
    assert states[children[0].data.tags["slurm.job_id"]] == "COMPLETED"
    assert states[cancelled].startswith("CANCELLED"), states  # "CANCELLED by <uid>"
    assert states[limited] in ("TIMEOUT", "FAILED"), states
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["jobs_finished"] == 1 and parent.data.metrics["jobs_killed"] == 2


def test_eight_concurrent_jobs_lose_nothing_on_the_server(mlflow_server, tmp_path):
    overrides = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=8", "dataset=iris,xor", "seed=0,1,2,3"]
    done = run_cli(*overrides, *tracking(mlflow_server, "load"), f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   cwd=tmp_path, env=cli_env(PYTHONPATH=str(ROOT)), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parent, children = sweep_of(mlflow_server.uri, "load")
    assert parent.info.status == "FINISHED" and len(children) == 8
    assert [c.info.status for c in children] == ["FINISHED"] * 8
    # the same records for every job: params, metrics (with each layer's), tags and artifact files
    metric_names = {name for c in children for name in c.data.metrics}
    assert {"train_error", "test_error", "test_accuracy", "fit_seconds", "layer1.rank", "layer3.cond"} <= metric_names
    files = [artifact_files(mlflow_server.uri, c.info.run_id) for c in children]
    assert {"logs/run.log", "spectra/layer1.npy", "spectra/layer3.npy"} <= files[0]
    for child in children:  # every job's network is on the server as its run's MLflow model
        assert len(logged_network(mlflow_server.uri, child.info.run_id, tmp_path / child.info.run_id).weights) >= 2
    for child, found in zip(children, files):  # alike within a dataset (iris's net has 2 solved layers, xor's 3)
        same = next(c for c in children if c.data.params["dataset.name"] == child.data.params["dataset.name"])
        assert set(child.data.metrics) == set(same.data.metrics), child.info.run_name
        assert set(child.data.params) == set(same.data.params)
        assert found == files[children.index(same)], child.info.run_name
    # every metric value reached the store: the history of each has exactly one point
    store = client(mlflow_server.uri)
    for child in children:
        for name in ("train_error", "layer1.rank"):
            assert len(store.get_metric_history(child.info.run_id, name)) == 1
    assert sorted((c.data.params["dataset.name"], c.data.params["seed"]) for c in children) == \
        sorted((d, str(s)) for d in ("iris", "xor") for s in range(4))
