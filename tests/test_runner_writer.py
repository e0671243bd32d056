"""A single run's MLflow writer process (zorb/runner/writer.py): the same records as a run
that writes itself, no MLflow in the run's process, a failed write that ends the run FAILED,
a deleted experiment refused before the fit. Its end after kill -9 of the run is in
test_runner_faults.py."""

from __future__ import annotations

import numpy as np
import pytest
from runner_fixtures import client, cli_env, logged_network, run_cli, runs_of, store, template_store  # noqa: F401

from zorb.runner import writer
from zorb.runner.tracking import dataset_entity, dataset_spec

IRIS = ["dataset=iris", "network=iris"]


def test_a_dataset_spec_gives_the_entity_mlflow_makes_from_the_arrays():
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource

    rng = np.random.default_rng(0)
    features, targets = rng.normal(size=(7, 2, 3)), rng.normal(size=(7, 4)).astype(np.float32)
    source = {"loader": "zorb.data.load_dataset", "seed": "3"}
    expected = mlflow.data.from_numpy(features, targets=targets, source=CodeDatasetSource(source), name="d-train",
                                      digest="0123456789abcdef")._to_mlflow_entity()
    spec = dataset_spec("train", "d-train", "0123456789abcdef", source, features, targets)
    made = dataset_entity(spec)
    for field in ("name", "digest", "source_type", "source", "schema", "profile"):
        assert getattr(made, field) == getattr(expected, field), field
    assert '"features_shape": [7, 2, 3]' in made.profile and '"targets_nbytes": 112' in made.profile


@pytest.mark.parametrize("argv, expected", [
    (IRIS, True),
    (["-m", *IRIS, "seed=0,1"], False),
    (["--multirun", *IRIS], False),
    (["--cfg", "job"], False),
    ([*IRIS, "tracking=off"], False),
])
def test_only_a_single_tracked_run_starts_a_writer(argv, expected, monkeypatch):
    monkeypatch.delenv(writer.ENV_SWITCH, raising=False)
    assert writer.wanted(argv) is expected
    monkeypatch.setenv(writer.ENV_SWITCH, "0")
    assert writer.wanted(argv) is False


@pytest.mark.slow
def test_a_run_records_the_same_through_its_writer_process_and_never_imports_mlflow_or_matplotlib(store, tmp_path):  # noqa: F811
    through = _run_with_importtime([*IRIS, f"tracking.uri={store}"], tmp_path, cli_env())
    itself = run_cli(*IRIS, f"tracking.uri={store}", cwd=tmp_path, env=cli_env(**{writer.ENV_SWITCH: "0"}))
    assert through.returncode == 0 and itself.returncode == 0, through.stderr[-3000:] + itself.stderr[-3000:]
    imported = [line.rsplit("|", 1)[1].strip() for line in through.stderr.splitlines() if line.startswith("import time:")]
    assert "jax" in imported and not any(name.split(".")[0] in ("mlflow", "sqlalchemy", "alembic", "matplotlib")
                                         for name in imported)
    assert "MLflow run " in through.stdout and " in experiment 'zorb' at " in through.stdout

    by_process, by_run = runs_of(store)
    assert by_process.data.tags["zorb.mlflow_writer"] == "process" and by_run.data.tags["zorb.mlflow_writer"] == "run"
    assert by_process.info.status == by_run.info.status == "FINISHED"
    assert by_process.info.run_name == by_run.info.run_name == "iris-iris-zorb-seed0"
    assert by_process.data.tags["zorb.pid"] != by_run.data.tags["zorb.pid"]
    timing = {key for key in by_run.data.metrics if key.endswith("_seconds")}
    assert set(by_process.data.metrics) == set(by_run.data.metrics)
    for key, value in by_run.data.metrics.items():
        if key not in timing and not key.startswith("layer"):
            assert by_process.data.metrics[key] == value, key
    assert by_process.data.metrics["layer3.rank"] == by_run.data.metrics["layer3.rank"] == 9
    assert by_process.data.params == by_run.data.params
    assert set(by_process.data.tags) == set(by_run.data.tags)
    assert by_process.data.tags["zorb.init_sha256"] == by_run.data.tags["zorb.init_sha256"]
    mlflow_client = client(store)
    for run in (by_process, by_run):
        history = mlflow_client.get_metric_history(run.info.run_id, "layer.rank")
        assert sorted((point.step, point.value) for point in history) == [(1, 5.0), (3, 9.0)]
    assert [(i.dataset.name, i.dataset.digest, i.dataset.profile) for i in by_process.inputs.dataset_inputs] == \
        [(i.dataset.name, i.dataset.digest, i.dataset.profile) for i in by_run.inputs.dataset_inputs]

    def artifacts(run_id: str, path: str | None = None) -> list[str]:
        found = []
        for item in mlflow_client.list_artifacts(run_id, path):
            found += artifacts(run_id, item.path) if item.is_dir else [item.path]
        return sorted(found)

    assert artifacts(by_process.info.run_id) == artifacts(by_run.info.run_id)
    assert "spectra/spectra.png" in artifacts(by_process.info.run_id)
    first = logged_network(store, by_process.info.run_id, tmp_path / "a")
    second = logged_network(store, by_run.info.run_id, tmp_path / "b")
    for one, two in zip(first.weights, second.weights):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(two))
    (model,) = [m for m in mlflow_client.search_logged_models([by_process.info.experiment_id])
                if m.source_run_id == by_process.info.run_id]
    assert {metric.key for metric in model.metrics} >= {"test_accuracy", "train_error"}


def _run_with_importtime(args: list[str], cwd, env):
    import subprocess
    import sys

    from runner_fixtures import RUN_PY

    return subprocess.run([sys.executable, "-X", "importtime", str(RUN_PY), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_failed_write_ends_the_run_failed_with_its_error(store, monkeypatch):  # noqa: F811
    process = writer.WriterProcess()
    try:
        recorder = process.open_run(store, "written", "failing", {"t": "1"})
        recorder.log_params({"a": "1"})
        recorder.log_params({"a": "2"})  # MLflow refuses to change a param: the writer's reply says so
        with pytest.raises(writer.WriterError, match="[Cc]hanging param values is not allowed"):
            recorder.terminate("FINISHED")
        run = client(store).get_run(recorder.run_id)
        assert run.info.status == "FAILED"
        assert "param" in run.data.tags["error"] and run.data.params == {"a": "1"}
    finally:
        process.close(timeout=60)
    assert process.process.returncode == 0


def test_a_deleted_experiment_stops_the_run_before_its_fit(store, tmp_path):  # noqa: F811
    mlflow_client = client(store)
    mlflow_client.delete_experiment(mlflow_client.create_experiment("gone"))
    done = run_cli(*IRIS, f"tracking.uri={store}", "tracking.experiment=gone", cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and " - fitting " not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"MLflow experiment 'gone' is deleted in {store}: restore it (mlflow experiments restore) or choose "
        f"another tracking.experiment")
    assert runs_of(store, "gone") == []


@pytest.mark.slow
def test_the_writer_draws_the_ridge_figure_from_the_runs_summary(store, tmp_path):  # noqa: F811
    import json
    from pathlib import Path

    done = run_cli(*IRIS, "solver.ridge=auto", "tracking.log_model=false", f"tracking.uri={store}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(store)
    assert run.data.tags["zorb.mlflow_writer"] == "process"
    folder = Path(client(store).download_artifacts(run.info.run_id, "spectra", str(tmp_path)))
    summary = {layer["index"]: layer for layer in json.loads((folder / "summary.json").read_text())}
    for index in (1, 3):
        grid = np.asarray(summary[index]["ridge_grid"])
        assert grid.ndim == 1 and len(grid) == len(summary[index]["ridge_score"]) > 10
        assert grid.min() <= run.data.metrics[f"layer{index}.ridge"] <= grid.max()
    for figure in ("spectra.png", "ridge_gcv.png"):
        assert (folder / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
