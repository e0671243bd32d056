"""The runner end to end: what one run records in MLflow, read back with MlflowClient, and
what a bad config does (one sentence, non-zero exit, the run marked FAILED, no fit)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from runner_fixtures import cli_env, client, compose, run_cli, runs_of, store, template_store  # noqa: F401

import zorb
from zorb.runner import job as runner
from zorb.runner import tracking
from zorb.data import load_dataset

REQUIRED_METRICS = {"train_error", "test_error", "train_mse", "test_mse", "fit_seconds", "compile_seconds"}
CLASSIFICATION_METRICS = {"train_accuracy", "test_accuracy"}
REQUIRED_TAGS = {"git.commit", "git.dirty", "hydra.overrides", "jax.backend", "jax.devices", "dtype"}


def design_shapes(cfg, dataset) -> dict[int, tuple[int, int]]:
    """(rows, columns) of [A, 1] for each parametric layer, worked out from the network's
    shapes: samples (times output positions for conv2d) by fan-in plus the bias column."""
    specs = OmegaConf.to_container(cfg.network.layers, resolve=True)
    net = zorb.build_network(specs, dataset.input_shape, output_dim=dataset.output_dim)
    shapes = {}
    for index in net.parametric_indices:
        layer = net.layers[index - 1]
        positions = math.prod(layer.out_shape[:-1]) if layer.kind == "conv2d" else 1
        shapes[index] = (len(dataset.x_train) * positions, layer.weights.shape[0])
    return shapes


def check_recorded_run(uri: str, run, cfg, tmp_path: Path, *, cli: bool) -> None:
    """Everything a run must record: params, tags, metrics, spectra, figure, model, config."""
    mlflow_client = client(uri)
    assert run.info.status == "FINISHED"
    expected_params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    assert run.data.params == expected_params
    assert REQUIRED_TAGS <= set(run.data.tags)
    assert run.data.tags["dtype"] == "float64" and run.data.tags["jax.backend"] == "cpu"
    assert run.data.tags["git.dirty"] in ("true", "false", "unknown")

    dataset = load_dataset(cfg.dataset.name, seed=cfg.seed, data_dir=cfg.data_dir)
    metrics = run.data.metrics
    assert REQUIRED_METRICS <= set(metrics)
    if dataset.task != "regression":
        assert CLASSIFICATION_METRICS <= set(metrics)
    shapes = design_shapes(cfg, dataset)
    for index in shapes:
        assert {f"layer{index}.solve_seconds", f"layer{index}.rank", f"layer{index}.cond"} <= set(metrics)

    downloaded = Path(mlflow_client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
    for index, (rows, cols) in shapes.items():
        spectrum = np.load(downloaded / "spectra" / f"layer{index}.npy")
        assert spectrum.shape == (min(rows, cols),)
        assert np.all(np.diff(spectrum) <= 0)
        assert metrics[f"layer{index}.rank"] == np.sum(spectrum > metrics[f"layer{index}.cutoff"])
    assert (downloaded / "spectra" / "spectra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = zorb.load(downloaded / "model" / "model.npz")
    scores = zorb.evaluate(model, dataset.x_test, dataset.y_test, task=dataset.task)
    assert scores["error"] == pytest.approx(metrics["test_error"], rel=1e-9)
    if "accuracy" in scores:
        assert scores["accuracy"] == metrics["test_accuracy"]

    assert OmegaConf.load(downloaded / "config.yaml") == OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if cli:
        assert OmegaConf.load(downloaded / "hydra" / "config.yaml").dataset.name == cfg.dataset.name
        overrides = list(OmegaConf.load(downloaded / "hydra" / "overrides.yaml"))
        assert run.data.tags["hydra.overrides"] == " ".join(overrides)
        assert (downloaded / "logs").is_dir()


def test_run_in_process_records_everything(store, tmp_path):
    cfg = compose("dataset=iris", f"tracking.uri={store}")
    metrics = runner.main(cfg)
    [run] = runs_of(store)
    check_recorded_run(store, run, cfg, tmp_path, cli=False)
    assert metrics["test_accuracy"] == run.data.metrics["test_accuracy"]
    assert metrics["test_accuracy"] > 0.8
    experiment = client(store).get_experiment(run.info.experiment_id)
    store_dir = Path(store[len("sqlite:///"):]).parent
    assert experiment.artifact_location == (store_dir / "mlartifacts" / "zorb").as_uri()


def test_per_layer_solver_options(store, tmp_path):
    cfg = compose("dataset=iris", f"tracking.uri={store}", "+solver.per_layer.3.rcond=1e-3",
                  "+solver.per_layer.3.ridge=0.5")
    runner.main(cfg)
    [run] = runs_of(store)
    assert run.data.params["solver.per_layer.3.rcond"] == "0.001"
    folder = client(store).download_artifacts(run.info.run_id, "spectra", str(tmp_path))
    summary = {layer["index"]: layer for layer in json.loads((Path(folder) / "summary.json").read_text())}
    assert (summary[1]["u_rcond"], summary[1]["ridge"]) == (1e-15, 0.0)
    assert (summary[3]["u_rcond"], summary[3]["b_rcond"], summary[3]["ridge"]) == (1e-3, 1e-3, 0.5)


def test_experiment_name_comes_from_the_config(store):
    runner.main(compose("dataset=xor", f"tracking.uri={store}", "tracking.experiment=xor runs",
                        "tracking.log_model=false"))
    assert len(runs_of(store, "xor runs")) == 1 and not runs_of(store, "zorb")


def test_tracking_off_records_nothing(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    metrics = runner.main(compose("dataset=iris", "tracking=off"))
    assert "test_accuracy" in metrics and not runs_of(store)


# (overrides, the sentence the user sees): each fails before any compute.
BAD_CONFIGS = [
    (["network.layers.0.type=foo"], "layer 1: unknown layer type 'foo'"),
    (["network.layers.0.filters=-2"], "layer 1: conv2d filters must be a positive integer"),
    (["+network.layers.0.colour=red"], "conv2d has no parameter 'colour'"),
    (["dataset=iris", "network=conv_dense"], "conv2d needs an image input"),
    # conv3's three valid 3x3 convolutions, the last widened to 5x5, on digits' 8x8 images
    (["dataset=digits", "network=conv3", "network.layers.4.kernel_size=5"], "larger than"),
    (["solver.rcond=-1"], "rcond must be >= 0"),
    (["solver.name=lu"], "unknown solver 'lu'"),
    (["dataset.name=foo"], "unknown dataset 'foo'"),
    (["method.name=sgd"], "unknown method 'sgd'"),
    (["dataset=iris", "+solver.per_layer.2.rcond=1e-3"], "per_layer names layer 2"),
    (["solver=qr", "solver.chunk_rows=0"], "solver.chunk_rows must be a positive integer or null, got 0"),
    (["solver=qr", "solver.chunk_rows=1.5"], "solver.chunk_rows must be a positive integer or null, got 1.5"),
    (["solver=qr", "solver.devices=many"], "solver.devices must be a positive integer, 'all' or null, got 'many'"),
    (["solver=qr", "solver.devices=0"], "solver.devices must be a positive integer, 'all' or null, got 0"),
    (["solver=qr", "solver.devices=4096"], "solver.devices=4096 but JAX sees"),
    (["dataset=iris", "solver=svd", "solver.chunk_rows=50"],
     "solver=svd needs the whole design matrix in memory, so it cannot stream rows with solver.chunk_rows: "
     "use solver=qr"),
    (["dataset=iris", "solver=qr", "solver.chunk_rows=50", "+solver.per_layer.3.solver=svd"],
     "solver.per_layer.3.solver=svd needs the whole design matrix in memory"),
    (["dataset=iris", "cache.compile=maybe"], "cache.compile must be true or false, got 'maybe'"),
    (["dataset=iris", "+cache.folder=x"], "cache has no key 'folder' (keys: dir, data, compile)"),
]


@pytest.mark.parametrize("overrides, message", BAD_CONFIGS, ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_bad_config_fails_before_any_compute(store, overrides, message):
    with pytest.raises(runner.RunFailed, match=re.escape(message)) as raised:
        runner.main(compose(*overrides, f"tracking.uri={store}"))
    assert "\n" not in str(raised.value)
    [run] = runs_of(store)
    assert run.info.status == "FAILED"
    assert message in run.data.tags["error"]
    assert "fit_seconds" not in run.data.metrics


def test_chunked_qr_run_matches_the_in_memory_one(store):
    """solver.chunk_rows streams iris's 105 training rows in chunks of 40 (40 + 40 + 25):
    the same figures as the in-memory qr fit, and the setting recorded as a param."""
    assert len(load_dataset("iris", seed=0).x_train) % 40 != 0
    runner.main(compose("dataset=iris", "solver=qr", f"tracking.uri={store}", "tracking.log_model=false"))
    runner.main(compose("dataset=iris", "solver=qr", "solver.chunk_rows=40", f"tracking.uri={store}",
                        "tracking.log_model=false"))
    in_memory, chunked = runs_of(store)
    assert in_memory.info.status == chunked.info.status == "FINISHED"
    assert (in_memory.data.params["solver.chunk_rows"], chunked.data.params["solver.chunk_rows"]) == ("null", "40")
    assert chunked.data.params["solver.devices"] == "null"
    for key in ("train_error", "test_error", "train_mse", "test_mse"):
        assert chunked.data.metrics[key] == pytest.approx(in_memory.data.metrics[key], rel=1e-8), key
    assert chunked.data.metrics["train_samples"] == 105


@pytest.mark.slow
def test_cli_chunk_rows_needs_a_streaming_solver(store, tmp_path):
    result = run_cli("dataset=iris", "solver=svd", "solver.chunk_rows=50", f"tracking.uri={store}", cwd=tmp_path,
                     timeout=120)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "solver.chunk_rows" in line and "solver=qr" in line
    [run] = runs_of(store)
    assert run.info.status == "FAILED" and run.data.tags["error"] == line
    assert run.data.params["solver.chunk_rows"] == "50"
    assert "fit_seconds" not in run.data.metrics


@pytest.mark.slow
def test_cli_default_run(store, tmp_path):
    """`python run.py` with no arguments: the offline example, in seconds; the store comes
    from MLFLOW_TRACKING_URI."""
    result = run_cli(cwd=tmp_path, env=cli_env(MLFLOW_TRACKING_URI=store))
    assert result.returncode == 0, result.stderr
    [run] = runs_of(store)
    cfg = compose()
    check_recorded_run(store, run, cfg, tmp_path, cli=True)
    assert run.data.tags["hydra.overrides"] == ""
    assert run.data.metrics["test_accuracy"] >= 0.8
    assert run.data.metrics["fit_seconds"] < 60
    # progress: one line per solved layer, with its design shape and solve time
    assert "layer 1 (conv2d, 1/2): [A, 1] 256000 x 26, solve" in result.stdout
    assert "layer 4 (dense, 2/2): [A, 1] 4000 x 513, solve" in result.stdout


@pytest.mark.slow
def test_cli_override_run(store, tmp_path):
    overrides = ["dataset=iris", "network=iris", "solver.rcond=1e-9", "seed=3", f"tracking.uri={store}"]
    result = run_cli(*overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [run] = runs_of(store)
    cfg = compose(*overrides)
    check_recorded_run(store, run, cfg, tmp_path, cli=True)
    assert run.data.params["solver.rcond"] == "1e-09" and run.data.params["seed"] == "3"
    assert run.data.tags["hydra.overrides"] == " ".join(overrides)
    assert not (tmp_path / "mlflow.db").exists()  # the store is where tracking.uri says


CLI_BAD_CONFIGS = [
    (["dataset=foo"], "Could not find 'dataset/foo'"),
    (["network=foo"], "Could not find 'network/foo'"),
    (["dataset=iris", "network.layers.0.type=foo"], "layer 1: unknown layer type 'foo'"),
    (["dataset=iris", "network.layers.0.units=0"], "layer 1: dense units must be a positive integer"),
    (["dataset=iris", "network=conv_dense"], "conv2d needs an image input"),
    (["dataset=iris", "solver.rcond=-1"], "rcond must be >= 0"),
    (["dataset=iris", "solver=qr", "solver.chunk_rows=0"], "solver.chunk_rows must be a positive integer or null"),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", CLI_BAD_CONFIGS, ids=[" ".join(o) for o, _ in CLI_BAD_CONFIGS])
def test_cli_bad_config(store, tmp_path, overrides, message):
    result = run_cli(*overrides, f"tracking.uri={store}", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    runs = runs_of(store)
    if overrides[0].startswith(("dataset=foo", "network=foo")):
        assert not runs  # Hydra refuses before the task starts
        assert "Available options" in result.stderr
    else:
        [run] = runs
        assert run.info.status == "FAILED" and message in run.data.tags["error"]
        assert "fit_seconds" not in run.data.metrics
