"""The runner end to end: what one run records in MLflow, read back with MlflowClient, and
what a bad config does (one sentence, non-zero exit, the run marked FAILED, no fit)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from omegaconf import OmegaConf
from runner_fixtures import cli_env, client, compose, run_cli, runs_of, store, template_store  # noqa: F401

import zorb
from zorb.runner import experiment as experiment_module
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
    """Everything a run must record: its name, params, tags, metrics and per-layer series,
    dataset inputs, spectra, figure, MLflow model, config; its experiment's kind."""
    mlflow_client = client(uri)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{cfg.dataset.name}-{cfg.network.name}-{cfg.method.name}-seed{cfg.seed}"
    experiment = mlflow_client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    expected_params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    assert run.data.params == expected_params
    # params number the layers from 1, as the metrics do
    for position, spec in enumerate(cfg.network.layers, 1):
        assert run.data.params[f"network.layers.{position}.type"] == spec.type
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
    # one point per parametric layer, its position as the step, the value of layer{i}.<figure>
    for figure in ("rank", "cond", "solve_seconds"):
        series = {m.step: m.value for m in mlflow_client.get_metric_history(run.info.run_id, f"layer.{figure}")}
        assert series == {index: metrics[f"layer{index}.{figure}"] for index in shapes}

    inputs = {tag.value: entry.dataset for entry in run.inputs.dataset_inputs for tag in entry.tags
              if tag.key == "mlflow.data.context"}
    assert set(inputs) == {"train", "test"}
    for split in ("train", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        assert inputs[split].name == f"{cfg.dataset.name}-{split}"
        assert inputs[split].digest == experiment_module.arrays_digest([x, y])[:16]
        profile = json.loads(inputs[split].profile)
        assert profile["features_shape"] == list(x.shape) and profile["targets_shape"] == list(y.shape)
        assert json.loads(inputs[split].source)["tags"]["dataset.name"] == cfg.dataset.name

    downloaded = Path(mlflow_client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
    for index, (rows, cols) in shapes.items():
        spectrum = np.load(downloaded / "spectra" / f"layer{index}.npy")
        assert spectrum.shape == (min(rows, cols),)
        assert np.all(np.diff(spectrum) <= 0)
        assert metrics[f"layer{index}.rank"] == np.sum(spectrum > metrics[f"layer{index}.cutoff"])
    assert (downloaded / "spectra" / "spectra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the MLflow model: a pyfunc that runs zorb.predict on the network saved inside it
    with _use_tracking_uri(uri):  # the store runs:/ URIs are read from, restored after
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path)))
    network = zorb.load(local / "data" / "model.npz")
    np.testing.assert_array_equal(model.predict(dataset.x_test), zorb.predict(network, dataset.x_test))
    scores = zorb.evaluate(network, dataset.x_test, dataset.y_test, task=dataset.task)
    assert scores["error"] == pytest.approx(metrics["test_error"], rel=1e-9)
    if "accuracy" in scores:
        assert scores["accuracy"] == metrics["test_accuracy"]
    [logged] = mlflow_client.search_logged_models([run.info.experiment_id],
                                                  filter_string=f"source_run_id = '{run.info.run_id}'")
    assert logged.name == "model" and {m.key for m in logged.metrics} >= {"test_error"}

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


def test_auto_ridge_logs_each_layers_choice_and_its_gcv_figure(store, tmp_path):
    cfg = compose("dataset=iris", f"tracking.uri={store}", "solver.ridge=auto", "tracking.log_model=false")
    runner.main(cfg)
    [run] = runs_of(store)
    assert run.data.params["solver.ridge"] == "auto"
    folder = Path(client(store).download_artifacts(run.info.run_id, "spectra", str(tmp_path)))
    summary = {layer["index"]: layer for layer in json.loads((folder / "summary.json").read_text())}
    dataset = load_dataset("iris", seed=cfg.seed, data_dir=cfg.data_dir)
    for index in (1, 3):
        chosen = run.data.metrics[f"layer{index}.ridge"]
        assert chosen > 0 and summary[index]["ridge"] == pytest.approx(chosen, rel=1e-6)
    assert (folder / "ridge_gcv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # zorb.fit outside the runner, same data and seed, chooses the same ridges
    net = zorb.build_network(OmegaConf.to_container(cfg.network.layers, resolve=True), dataset.input_shape,
                             output_dim=dataset.output_dim, seed=cfg.seed)
    _, report = zorb.fit(net, dataset.x_train, dataset.y_train, rcond=cfg.solver.rcond, ridge="auto", seed=cfg.seed)
    assert [r.ridge for r in report.layers] == pytest.approx([summary[1]["ridge"], summary[3]["ridge"]], rel=1e-9)


def test_init_seed_fixes_the_initial_weights_across_seeds(store):
    """The paper's Boston runs all started from the same weights; init_seed does that."""
    for seed in (0, 1):
        runner.main(compose("dataset=boston", f"seed={seed}", "init_seed=7", f"tracking.uri={store}",
                            "tracking.log_model=false"))
    runner.main(compose("dataset=boston", "seed=1", f"tracking.uri={store}", "tracking.log_model=false"))
    digests = [run.data.tags["zorb.init_sha256"] for run in sorted(runs_of(store), key=lambda r: r.info.start_time)]
    assert digests[0] == digests[1] != digests[2]


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
    (["init_seed=-1"], "init_seed must be a non-negative integer or null"),
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
    """`python run.py` with no arguments: the offline example; the store comes from
    MLFLOW_TRACKING_URI."""
    # its read-out solve (4000 x 2305) takes minutes when the 2-core machine is shared
    result = run_cli(cwd=tmp_path, env=cli_env(MLFLOW_TRACKING_URI=store), timeout=1200)
    assert result.returncode == 0, result.stderr
    [run] = runs_of(store)
    cfg = compose()
    check_recorded_run(store, run, cfg, tmp_path, cli=True)
    assert run.data.tags["hydra.overrides"] == ""
    assert run.data.metrics["test_accuracy"] >= 0.9
    assert run.data.metrics["layer1.ridge"] > 0 and run.data.metrics["layer4.ridge"] > 0  # conv_dense's ridge=auto
    # progress: one line per solved layer, with its design shape and solve time
    assert "layer 1 (conv2d, 1/2): [A, 1] 576000 x 26, solve" in result.stdout
    assert "layer 4 (dense, 2/2): [A, 1] 4000 x 2305, solve" in result.stdout


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
