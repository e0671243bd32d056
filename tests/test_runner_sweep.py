"""Hydra multiruns: one MLflow parent run per sweep, a child per job, failed jobs marked
FAILED while the others finish, the parent always closed; the same with parallel joblib
workers writing one SQLite store."""

from __future__ import annotations

import os

import pytest
from runner_fixtures import run_cli, runs_of, store, template_store  # noqa: F401

pytestmark = pytest.mark.slow

# Four jobs; the one with a negative rcond fails before any compute.
FAILING_SWEEP = ["-m", "dataset=iris", "solver.rcond=1e-15,1e-9,1e-6,-1"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def parent_and_children(uri: str):
    runs = runs_of(uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    return parent, children


def check_children_finished(children) -> None:
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"test_accuracy", "fit_seconds", "layer1.rank", "layer3.cond"} <= set(child.data.metrics)
        assert child.info.end_time is not None


@pytest.mark.parametrize("launcher", [[], JOBLIB], ids=["basic", "joblib"])
def test_sweep_with_a_failing_job(store, tmp_path, launcher):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(*FAILING_SWEEP, *launcher, f"tracking.uri={store}", f"hydra.sweep.dir={sweep_dir}",
                     cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "rcond must be >= 0" in result.stderr

    parent, children = parent_and_children(store)
    assert len(children) == 4
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1 and failed[0].data.params["solver.rcond"] == "-1"
    assert "rcond must be >= 0" in failed[0].data.tags["error"]
    finished = [c for c in children if c.info.status != "FAILED"]
    check_children_finished(finished)
    assert sorted(c.data.params["solver.rcond"] for c in finished) == ["1e-06", "1e-09", "1e-15"]
    assert sorted(c.data.tags["zorb.job_num"] for c in children) == ["0", "1", "2", "3"]

    assert parent.info.status == "FAILED" and parent.info.end_time is not None
    assert parent.data.metrics["jobs_finished"] == 3 and parent.data.metrics["jobs_failed"] == 1
    assert parent.data.params["sweep.jobs"] == "4"
    assert parent.data.tags["zorb.sweep_dir"] == str(sweep_dir)
    if launcher:
        # two workers share the cores: each job pinned to its half
        share = str(max(1, len(os.sched_getaffinity(0)) // 2))
        assert {c.data.tags["zorb.kernels.threads"] for c in children} == {share}


def test_sweep_of_datasets_and_seeds(store, tmp_path):
    """The README's example sweep: every job finishes and so does the parent."""
    result = run_cli("-m", "dataset=iris,xor", "seed=0,1,2", f"tracking.uri={store}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parent, children = parent_and_children(store)
    assert len(children) == 6
    check_children_finished(children)
    assert sorted((c.data.params["dataset.name"], c.data.params["network.name"], c.data.params["seed"])
                  for c in children) == [(d, d, s) for d in ("iris", "xor") for s in "012"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs_finished"] == 6 and parent.data.metrics["jobs_failed"] == 0


def test_sweep_without_the_callback_still_has_one_closed_parent(store, tmp_path):
    """With the Hydra callback removed, the first job opens the parent and the last closes it."""
    result = run_cli("-m", "dataset=iris", "seed=0,1", "~hydra.callbacks.mlflow_sweep", f"tracking.uri={store}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parent, children = parent_and_children(store)
    assert len(children) == 2
    check_children_finished(children)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.jobs"] == "2"
