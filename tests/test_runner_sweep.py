"""Hydra multiruns: one MLflow parent run per sweep, a child per job, failed jobs marked
FAILED while the others finish, the parent always closed; the same with parallel joblib
workers writing one SQLite store."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from runner_fixtures import ROOT, cli_env, client, run_cli, runs_of, store, template_store  # noqa: F401

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


def test_sweep_of_datasets_and_seeds_and_its_table(store, tmp_path):
    """The README's example sweep: every job finishes and so does the parent, which holds the
    sweep's table and figure; tables.py --sweep latest tabulates it again: one row per
    dataset, mean ± std over the two seeds."""
    result = run_cli("-m", "dataset=iris,xor", "seed=0,1", f"tracking.uri={store}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parent, children = parent_and_children(store)
    assert len(children) == 4
    check_children_finished(children)
    assert sorted((c.data.params["dataset.name"], c.data.params["network.name"], c.data.params["seed"])
                  for c in children) == [(d, d, s) for d in ("iris", "xor") for s in "01"]
    assert sorted(c.info.run_name for c in children) == sorted(
        f"{d}-{d}-zorb-seed{s} #{c.data.tags['zorb.job_num']}" for c in children
        for d, s in [(c.data.params["dataset.name"], c.data.params["seed"])])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs_finished"] == 4 and parent.data.metrics["jobs_failed"] == 0
    assert parent.data.tags["zorb.swept_keys"] == "dataset,seed"
    stem = f"tables/sweep_{parent.info.run_id}"
    # logged by the sweep callback when the multirun ended
    assert {f"{stem}.md", f"{stem}.csv", f"{stem}.png"} <= artifact_paths(store, parent.info.run_id, "tables")

    out = tmp_path / "tables"
    done = tables_py("--sweep", "latest", "--tracking-uri", store, "--out-dir", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table_csv = (out / f"sweep_{parent.info.run_id}.csv").read_text()
    # the same sweep named by its parent run
    done = tables_py("--parent-run-id", parent.info.run_id, "--tracking-uri", store, "--out-dir",
                     str(tmp_path / "again"), "--no-log", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "again" / f"sweep_{parent.info.run_id}.csv").read_text() == table_csv
    rows = list(csv.DictReader(io.StringIO(table_csv)))
    assert [r["dataset.name"] for r in rows] == ["iris", "xor"]
    for row in rows:
        runs = [c for c in children if c.data.params["dataset.name"] == row["dataset.name"]]
        for metric in ("test_accuracy", "test_error", "train_error"):
            values = [c.data.metrics[metric] for c in runs]
            assert float(row[f"{metric}_mean"]) == pytest.approx(np.mean(values), rel=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(np.std(values), rel=1e-12, abs=1e-15)
        assert (row["method.name"], row["runs"], row["seeds"]) == ("zorb", "2", "0 1")
    table = (out / f"sweep_{parent.info.run_id}.md").read_text().splitlines()
    body = [line for line in table if line.startswith("| iris") or line.startswith("| xor")]
    assert len(body) == 2 and all(" ± " in line for line in body)
    assert (out / f"sweep_{parent.info.run_id}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def tables_py(*arguments: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "tables.py"), *arguments], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=300, check=False)


def artifact_paths(uri: str, run_id: str, folder: str) -> set[str]:
    return {f.path for f in client(uri).list_artifacts(run_id, folder)}


def test_sweep_without_the_callback_still_has_one_closed_parent(store, tmp_path):
    """With the Hydra callback removed, the first job opens the parent and the last closes it."""
    result = run_cli("-m", "dataset=iris", "seed=0,1", "~hydra.callbacks.mlflow_sweep", f"tracking.uri={store}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parent, children = parent_and_children(store)
    assert len(children) == 2
    check_children_finished(children)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.jobs"] == "2"
