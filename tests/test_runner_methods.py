"""method=adam and method=mlelm through the runner, the shared initial weights (init_file,
init_out, the zorb.init_sha256 tag), validation_fraction and the limits that profile=smoke sets."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from runner_fixtures import client, compose, runs_of, store, template_store  # noqa: F401

import zorb
from zorb import baselines
from zorb.runner import experiment
from zorb.runner import job as runner
from zorb.data import load_dataset

ZORB_METRICS = {"train_error", "test_error", "train_mse", "test_mse", "train_accuracy", "test_accuracy",
                "fit_seconds", "compile_seconds", "train_samples", "test_samples"}


def only_run(uri: str):
    [run] = runs_of(uri)
    assert run.info.status == "FINISHED"
    return run


def history(uri: str, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run.info.run_id, key))


def test_adam_learns_and_logs_its_curve_against_training_time(store):
    cfg = compose("dataset=iris", "method=adam", "method.learning_rate=1e-2", "method.steps=600",
                  "method.eval_every=100", f"tracking.uri={store}", "tracking.log_model=false")
    metrics = runner.main(cfg)
    run = only_run(store)
    assert ZORB_METRICS <= set(run.data.metrics)  # the same names as ZORB's
    assert run.data.tags["method"] == "adam" and run.data.params["method.learning_rate"] == "0.01"
    errors, seconds = history(store, run, "curve.train_error"), history(store, run, "curve.train_seconds")
    assert [s for s, _ in errors] == [s for s, _ in seconds] == list(range(0, 601, 100))
    times = [t for _, t in seconds]
    assert times[0] == 0.0 and np.all(np.diff(times) >= 0)  # monotone in time
    assert times[-1] == pytest.approx(run.data.metrics["fit_seconds"])
    assert run.data.metrics["curve_seconds"] == pytest.approx(metrics["curve_seconds"]) and metrics["curve_seconds"] > 0
    assert errors[-1][1] < 0.5 * errors[0][1]  # the training loss went down
    assert errors[-1][1] == pytest.approx(metrics["train_error"], rel=1e-9)
    assert metrics["test_accuracy"] >= 0.8


def test_mlelm_through_the_runner_is_the_baseline_from_the_same_weights(store, tmp_path):
    cfg = compose("dataset=iris", "method=mlelm", f"tracking.uri={store}")
    metrics = runner.main(cfg)
    run = only_run(store)
    data = load_dataset("iris", seed=0)
    net = zorb.build_network([dict(s) for s in cfg.network.layers], data.input_shape, output_dim=3, seed=0)
    expected, _ = baselines.fit_mlelm(net, data.x_train, data.y_train, rcond=1e-15)
    with _use_tracking_uri(store):  # runs:/ finds a logged model in MLflow's global store
        folder = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path))
    model = zorb.load(Path(folder) / "data" / "model.npz")
    for ours, theirs in zip(model.weights, expected.weights):
        np.testing.assert_array_equal(ours, theirs)
    assert metrics["test_error"] == zorb.evaluate(expected, data.x_test, data.y_test)["error"]
    assert {"layer1.rank", "layer3.rank"} <= set(run.data.metrics)  # its solves, logged like ZORB's


@pytest.mark.parametrize("overrides, message", [
    (["method=mlelm", "solver.ridge=0.5"], "ML-ELM is plain least squares"),
    (["method=mlelm", "network=conv_dense", "dataset=digits"], "ML-ELM is defined for dense networks"),
    (["method=adam", "+method.momentum=0.9"], "method adam has no option 'momentum' (options: learning_rate"),
    (["method=zorb", "+method.steps=10"], "method zorb has no option 'steps' (it takes none)"),
    (["method=adam", "~method.steps"], "method adam needs method.steps"),
    (["method=adam", "method.loss=hinge"], "unknown loss 'hinge'"),
    (["method=adam_converged", "method.learning_rates=[1e-3,-1]"], "method.learning_rates must be a non-empty list"),
    (["method=adam_converged", "method.validation_fraction=1.5"], "method.validation_fraction must be a number"),
    (["method=logreg", "method.validation_fraction=0"], "method.validation_fraction must be a number in (0, 1)"),
    (["method=logreg", "method.C=[1.0,-2.0]"], "C must be a positive number or a non-empty list"),
    (["method=adam", "method.test_curve=maybe"], "method.test_curve must be true or false"),
    (["validation_fraction=1"], "validation_fraction must be a number in [0, 1)"),
    (["limits.width=0"], "limits.width must be a positive integer or null"),
    (["init_file=/nonexistent/init.npz"], "init_file /nonexistent/init.npz does not exist"),
])
def test_bad_method_settings_fail_with_one_sentence(store, overrides, message):
    with pytest.raises(runner.RunFailed, match=re.escape(message)) as raised:
        runner.main(compose("dataset=iris", *overrides, f"tracking.uri={store}"))
    assert "\n" not in str(raised.value)
    [run] = runs_of(store)
    assert run.info.status == "FAILED" and message in run.data.tags["error"]


def test_the_seed_gives_every_method_the_same_initial_weights_and_init_file_carries_them(store, tmp_path):
    init = tmp_path / "inits" / "xor-seed0.npz"
    common = ["dataset=xor", "dataset.train_samples=100", "limits.steps=20", f"tracking.uri={store}",
              "tracking.log_model=false"]
    for method in ("zorb", "mlelm", "adam"):
        runner.main(compose(*common, f"method={method}", "seed=0",
                            *([f"init_out={init}"] if method == "zorb" else [])))
    seed0 = {r.data.tags["zorb.init_sha256"] for r in runs_of(store)}
    assert len(seed0) == 1  # the same seed, the same initial weights for all three
    data = load_dataset("xor", seed=0, train_samples=100)
    specs = [dict(s) for s in compose("dataset=xor").network.layers]
    written = baselines.load_initial_weights(zorb.build_network(specs, (2,), output_dim=1, seed=7), init)
    for ours, theirs in zip(written.weights, zorb.build_network(specs, data.input_shape, output_dim=1, seed=0).weights):
        np.testing.assert_array_equal(ours, theirs)  # init_out wrote seed 0's weights, bit for bit
    assert experiment.weights_digest(written) in seed0

    runner.main(compose(*common, "method=zorb", "seed=1"))
    for method in ("zorb", "mlelm", "adam"):
        runner.main(compose(*common, f"method={method}", "seed=1", f"init_file={init}"))
    runs = runs_of(store)[3:]
    assert runs[0].data.tags["zorb.init_sha256"] not in seed0  # seed 1's own weights differ
    assert {r.data.tags["zorb.init_sha256"] for r in runs[1:]} == seed0  # init_file: seed 0's start
    assert all(r.data.params["init_file"] == str(init) for r in runs[1:])


def test_validation_fits_again_on_the_rest_and_leaves_the_figures_alone(store):
    common = ["dataset=iris", f"tracking.uri={store}", "tracking.log_model=false"]
    plain = runner.main(compose(*common))
    checked = runner.main(compose(*common, "validation_fraction=0.2"))
    for key in ("train_error", "test_error", "test_accuracy"):
        assert checked[key] == plain[key]  # the reported fit still uses the whole training set
    assert checked["val_samples"] == 21 and 0 < checked["val_error"] < 1
    assert {"val_error", "val_accuracy", "val_fit_seconds"} <= set(runs_of(store)[1].data.metrics)


def test_adams_validation_refit_measures_no_curve_and_ends_on_the_same_weights(monkeypatch):
    """The refit runs its steps in one stretch (two error measurements, no test curve) and
    scores exactly as a refit that measured its curve every 20 steps."""
    from zorb.runner import methods

    dataset = load_dataset("xor", data_dir="data", seed=0)
    network = zorb.build_network([{"type": "dense", "units": 8}, {"type": "tanh"}, {"type": "dense", "units": 1},
                                  {"type": "sigmoid"}], dataset.input_shape, output_dim=1, seed=0)
    options = {"learning_rate": 1e-2, "steps": 300, "batch_size": 32, "loss": "sse", "eval_every": 20,
               "test_curve": True}
    seen = []
    train_adam = baselines.train_adam

    def watching(*args, **kwargs):
        trained, report = train_adam(*args, **kwargs)
        seen.append((kwargs["eval_every"], kwargs["watch"], len(report.curve)))
        return trained, report

    monkeypatch.setattr(baselines, "train_adam", watching)
    solver = None  # Adam uses no solver
    refit = experiment.validation_metrics(methods.fit_adam, network, dataset, solver, 0, options, 0.2, None)
    assert seen == [(300, None, 2)]
    monkeypatch.setitem(methods.REFIT_OPTIONS, methods.fit_adam, dict)  # as before: the options unchanged
    measured = experiment.validation_metrics(methods.fit_adam, network, dataset, solver, 0, options, 0.2, None)
    assert seen[1][0] == 20 and seen[1][1] is not None and seen[1][2] == 16
    assert {k: v for k, v in refit.items() if k != "val_fit_seconds"} == \
        {k: v for k, v in measured.items() if k != "val_fit_seconds"}


def test_limits_shrink_the_data_the_layers_and_the_steps(store):
    runner.main(compose("dataset=sinc", "method=adam", "limits.train_samples=50", "limits.test_samples=30",
                        "limits.width=5", "limits.steps=40", f"tracking.uri={store}", "tracking.log_model=false"))
    run = only_run(store)
    assert run.data.metrics["train_samples"] == 50 and run.data.metrics["test_samples"] == 30
    assert run.data.params["network.layers.1.units"] == "5" and run.data.params["network.layers.3.units"] == "5"
    assert run.data.params["network.layers.5.units"] == "outputs"
    assert run.data.params["method.steps"] == "40" and history(store, run, "curve.train_error")[-1][0] == 40


def test_smoke_profile_sets_the_limits():
    cfg = compose("experiment=paper_a", "profile=smoke")
    assert dict(cfg.limits) == {"train_samples": 20, "test_samples": 40, "width": 4, "steps": 50}
    assert compose("experiment=paper_a").limits.width is None
    assert Path(runner.__file__).name == "job.py"


def test_adam_converged_logs_the_chosen_rate_its_stop_and_its_curves(store):
    """The rate with the best validation accuracy wins; the run's network is that rate's best point,
    and the MLflow run holds every rate's validation accuracy and the chosen run's curves."""
    cfg = compose("dataset=iris", "method=adam_converged", "method.learning_rates=[3e-2,1e-3]",
                  "method.max_steps=3000", "method.eval_every=50", "method.patience=4",
                  "method.validation_fraction=0.2", f"tracking.uri={store}", "tracking.log_model=false")
    metrics = runner.main(cfg)
    run = only_run(store)
    data = load_dataset("iris", seed=0)
    rest, (x_val, y_val, _) = experiment.validation_split(data, 0.2, 0)
    net = zorb.build_network([dict(s) for s in cfg.network.layers], data.input_shape, output_dim=3, seed=0)
    found = {}
    for rate in (3e-2, 1e-3):
        trained, report = baselines.train_adam(net, rest.x_train, rest.y_train, learning_rate=rate, steps=3000,
                                               eval_every=50, loss="cross_entropy", seed=0,
                                               watch={"validation": (x_val, y_val)}, stop_on="validation", patience=4)
        found[rate] = (max(report.accuracy_curves["validation"]), trained, report)
    rate = max(found, key=lambda r: (found[r][0], r))
    best, trained, report = found[rate]
    logged = run.data.metrics
    assert logged["adam.learning_rate"] == rate and logged["adam.best_step"] == report.best_step
    assert logged["adam.val_accuracy.lr0.03"] == found[3e-2][0] and logged["adam.val_accuracy.lr0.001"] == found[1e-3][0]
    assert logged["adam.steps_run"] == report.steps_run < 3000 and logged["val_samples"] == len(x_val) == 21
    assert metrics["test_accuracy"] == zorb.evaluate(trained, data.x_test, data.y_test)["accuracy"]
    validation = history(store, run, "curve.validation_accuracy")
    test = history(store, run, "curve.test_accuracy")
    assert [s for s, _ in validation] == [s for s, _ in test] == list(range(0, report.steps_run + 1, 50))
    assert max(v for _, v in validation) == best
    assert logged["fit_seconds"] > logged["adam.chosen_fit_seconds"] > 0  # every rate's training counts


def test_logreg_through_the_runner_is_scikit_learns_model_as_a_network(store, tmp_path):
    from sklearn.linear_model import LogisticRegression

    metrics = runner.main(compose("dataset=digits", "method=logreg", "method.C=0.05", f"tracking.uri={store}"))
    run = only_run(store)
    data = load_dataset("digits", seed=0)
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    model = LogisticRegression(C=0.05, max_iter=1000).fit(flat(data.x_train), data.labels_train)
    assert metrics["test_accuracy"] == pytest.approx(model.score(flat(data.x_test), data.labels_test))
    assert run.data.metrics["logreg.C"] == 0.05
    from runner_fixtures import logged_network

    network = logged_network(store, run.info.run_id, tmp_path)
    assert [layer.kind for layer in network.layers] == ["flatten", "dense", "softmax"]
    np.testing.assert_array_equal(zorb.predict(network, data.x_test).argmax(1), model.predict(flat(data.x_test)))
