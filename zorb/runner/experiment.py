"""One experiment, start to end: load the data, build the network, fit it with the chosen
method, evaluate it. What is recorded about it (MLflow params, metrics, artifacts) lives in
``zorb.runner.records``: this module reports to an ``observer`` and never touches the store.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

import zorb
from zorb import baselines
from zorb.core.fit import as_data, resolve_options
from zorb.errors import ConfigError
from zorb.runner.progress import Progress
from zorb.runner.settings import (SolverSettings, cache_settings, get, init_paths, init_seed, layer_specs,
                                  load_plugins, method_settings, read_limits, solver_settings,
                                  validation_fraction)

log = logging.getLogger("zorb.runner.experiment")


class Observer(Protocol):
    """What the experiment tells the outside world (``zorb.runner.records.RunRecords`` records it)."""

    def network_built(self, network: zorb.Network) -> None: ...

    def data_warnings(self, warnings: Mapping[str, str]) -> None: ...

    def layer_solved(self, report) -> None: ...

    def finished(self, outcome: "Outcome") -> None: ...


@dataclasses.dataclass
class Outcome:
    """A finished experiment: the trained network, the method's report and the run's metrics."""
    config: Mapping[str, Any]
    dataset: Any
    trained: zorb.Network
    report: Any
    metrics: dict[str, float]


_VALIDATION_STREAM = 3


_TRAIN_LIMIT_STREAM = 4


_TEST_LIMIT_STREAM = 5


def weights_digest(network: zorb.Network) -> str:
    """SHA-256 of the network's weight arrays (dtype, shape and bytes of each, in order)."""
    return arrays_digest(network.weights)


def arrays_digest(arrays) -> str:
    """SHA-256 (hex) of arrays: the dtype, shape and bytes of each, in order."""
    digest = hashlib.sha256()
    for values in arrays:
        array = np.ascontiguousarray(np.asarray(values))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_dataset(config: Mapping):
    from zorb.data import load_dataset

    options = dict(get(config, "dataset"))
    name = options.pop("name", None)
    if name is None:
        raise ConfigError("the config has no 'dataset.name'")
    known = ("train_samples", "test_samples", "balanced", "replace", "flatten", "download")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"dataset has no option {unknown[0]!r} (options: {', '.join(known)})")
    seed = get(config, "seed")
    cache = cache_settings(config)
    dataset = load_dataset(name, data_dir=get(config, "data_dir"), seed=seed,
                           cache_dir=cache.folder / "data" if cache.data else None, **options)
    limits = read_limits(config)
    dataset = keep_rows(dataset, "train", limits["train_samples"], np.random.default_rng([seed, _TRAIN_LIMIT_STREAM]))
    return keep_rows(dataset, "test", limits["test_samples"], np.random.default_rng([seed, _TEST_LIMIT_STREAM]))


def rows_of(dataset, split: str, rows: np.ndarray) -> dict[str, Any]:
    labels = getattr(dataset, f"labels_{split}")
    return {f"x_{split}": getattr(dataset, f"x_{split}")[rows], f"y_{split}": getattr(dataset, f"y_{split}")[rows],
            f"labels_{split}": None if labels is None else labels[rows]}


def keep_rows(dataset, split: str, cap: int | None, rng: np.random.Generator):
    """``dataset`` with at most ``cap`` rows of ``split`` (a random subset, in their order)."""
    count = len(getattr(dataset, f"x_{split}"))
    if cap is None or count <= cap:
        return dataset
    rows = np.sort(rng.choice(count, size=cap, replace=False))
    return dataclasses.replace(dataset, **rows_of(dataset, split, rows))


def validation_split(dataset, fraction: float, seed: int):
    """``(rest, held_out)``: ``rest`` is ``dataset`` with only the training rows outside a
    seeded ``fraction`` of them; ``held_out`` is ``(x, y, task)`` of that fraction."""
    count = len(dataset.x_train)
    if count < 2:
        raise ConfigError(f"validation_fraction needs at least 2 training samples, {dataset.name} has {count}")
    held = min(count - 1, max(1, round(fraction * count)))
    order = np.random.default_rng([seed, _VALIDATION_STREAM]).permutation(count)
    keep, out = np.sort(order[held:]), np.sort(order[:held])
    rest = dataclasses.replace(dataset, **rows_of(dataset, "train", keep))
    return rest, (dataset.x_train[out], dataset.y_train[out], dataset.task)


def run_experiment(config: Mapping, observer: Observer | None = None) -> Outcome:
    """Run the experiment ``config`` describes (limits already applied); ``observer`` hears
    of the built network, each solved layer and the outcome."""
    load_plugins(config)
    method_name, fit_method, options = method_settings(config)
    solver = solver_settings(config)
    specs = layer_specs(config)
    seed = get(config, "seed")
    validation = validation_fraction(config)
    init_file, init_out = init_paths(config)
    weights_seed = init_seed(config)
    started = time.perf_counter()
    dataset = load_dataset(config)
    data_seconds = time.perf_counter() - started
    network = zorb.build_network(specs, dataset.input_shape, output_dim=dataset.output_dim, seed=weights_seed,
                                 dtype=str(config.get("dtype", "float64")))
    if init_file is not None:
        network = baselines.load_initial_weights(network, init_file)
        log.info("initial weights from %s", init_file)
    if init_out is not None:
        init_out.parent.mkdir(parents=True, exist_ok=True)
        baselines.save_initial_weights(network, init_out)
        log.info("initial weights written to %s", init_out)
    if observer is not None:
        observer.network_built(network)
    log.info("%s: %d train / %d test samples, input %s, %d outputs (%s)", dataset.name,
             len(dataset.x_train), len(dataset.x_test), dataset.input_shape, dataset.output_dim, dataset.task)
    show_diagram(config["network"]["name"], network.describe())
    settings = ", ".join(f"{key} {value}" for key, value in options.items()) or \
        f"solver {solver.name}, rcond {zorb.default_rcond(network.dtype) if solver.rcond is None else solver.rcond:g}, " \
        f"ridge {solver.ridge}" + \
        "".join(f", {key} {value}" for key, value in (("chunk_rows", solver.chunk_rows), ("devices", solver.devices))
                if value is not None)
    if method_name == "zorb":  # the per-layer options against the built network, before the fit
        resolve_options(network, **{key: value for key, value in solver.fit_options().items()
                                    if key in ("solver", "rcond", "u_rcond", "b_rcond", "ridge", "per_layer")})
    warnings = degenerate_data(network, dataset)
    for sentence in warnings.values():
        log.warning("%s", sentence)
    if warnings and observer is not None:
        observer.data_warnings(warnings)
    log.info("fitting %d layer(s) with %s: %s", len(network.parametric_indices), method_name, settings)

    # Checked before any method runs: a bad array fails here, and the check's one-time
    # compilation per shape stays out of the methods' clocks (zorb.core.fit times its own check).
    check_data(network, dataset)
    callback = observer.layer_solved if observer is not None else (lambda layer: None)
    progress = Progress()
    try:
        trained, report = fit_method(network, dataset, solver, seed=seed, callback=callback, progress=progress,
                                     **options)
    finally:
        progress.close()

    started = time.perf_counter()
    batch = config.get("eval_batch_size")
    train = evaluate(trained, dataset.x_train, dataset.y_train, dataset.task, batch, "train")
    test = evaluate(trained, dataset.x_test, dataset.y_test, dataset.task, batch, "test")
    eval_seconds = time.perf_counter() - started

    metrics = {f"train_{k}": v for k, v in train.items()}
    metrics.update({f"test_{k}": v for k, v in test.items()})
    metrics.update(fit_seconds=report.fit_seconds, compile_seconds=report.compile_seconds,
                   data_seconds=data_seconds, eval_seconds=eval_seconds,
                   train_samples=len(dataset.x_train), test_samples=len(dataset.x_test))
    if hasattr(report, "curve_seconds"):  # an iterative method's curve, measured off the clock
        metrics["curve_seconds"] = report.curve_seconds
    metrics.update(getattr(report, "metrics", {}))  # the method's own figures (the rate a search chose, ...)
    summary = ", ".join(f"{k} {metrics[k]:.4g}" for k in ("train_accuracy", "test_accuracy", "train_error",
                                                         "test_error") if k in metrics)
    log.info("done: %s; fit %.2f s (+ %.2f s compile)", summary, report.fit_seconds, report.compile_seconds)
    if validation:
        metrics.update(validation_metrics(fit_method, network, dataset, solver, seed, options, validation, batch))

    outcome = Outcome(config=config, dataset=dataset, trained=trained, report=report, metrics=metrics)
    if observer is not None:
        observer.finished(outcome)
    return outcome


def evaluate(network: zorb.Network, x, y, task: str, batch: int | None, split: str) -> dict[str, float]:
    """``zorb.evaluate`` with a progress bar over its batches (shown only when it takes a while)."""
    with Progress.bar(len(x), f"evaluating {split}", "rows") as rows_bar:
        return zorb.evaluate(network, x, y, task=task, batch_size=batch, progress=rows_bar.update)


@functools.lru_cache(maxsize=None)
def show_diagram(name: str, diagram: str) -> None:
    """Log a network's diagram once per process: a sweep's jobs on one network show it once."""
    log.info("network %s:\n%s", name, diagram)


def validation_metrics(fit_method: Callable, network: zorb.Network, dataset, solver: SolverSettings, seed: int,
                        options: Mapping[str, Any], fraction: float, batch: int | None) -> dict[str, float]:
    """``val_*``: the method fitted again, from the same initial weights, on the training rows
    outside a seeded ``fraction`` of them, and scored on those held-out rows."""
    from zorb.runner.methods import REFIT_OPTIONS

    rest, (x_val, y_val, task) = validation_split(dataset, fraction, seed)
    check_data(network, rest)
    options = REFIT_OPTIONS.get(fit_method, dict)(dict(options))
    trained, report = fit_method(network, rest, solver, seed=seed, callback=lambda layer: None,
                                 progress=Progress(), **options)
    scores = zorb.evaluate(trained, x_val, y_val, task=task, batch_size=batch)
    metrics = {f"val_{k}": v for k, v in scores.items()}
    metrics.update(val_samples=len(x_val), val_fit_seconds=report.fit_seconds)
    log.info("validation: fitted on %d samples, %d held out: val_error %.4g", len(rest.x_train), len(x_val),
             metrics["val_error"])
    return metrics


def degenerate_data(network: zorb.Network, dataset) -> dict[str, str]:
    """``{name: sentence}`` for training data a fit can run on but learns little from:
    ``single_class`` (every target the same class), ``interpolation`` (a layer has more
    unknowns per output than it has rows to fit: the solve interpolates) and
    ``constant_inputs`` (every training input identical)."""
    found = {}
    x, y, count = np.asarray(dataset.x_train), np.asarray(dataset.y_train), len(dataset.x_train)
    if dataset.task in ("classification", "binary") and count:
        labels = y.argmax(axis=1) if dataset.task == "classification" else np.round(y.reshape(count, -1)[:, 0])
        if len(np.unique(labels)) == 1:
            found["single_class"] = (f"every training target of {dataset.name} is class {labels[0]:g}: the "
                                     f"network can only learn to predict that class")
    for index in network.parametric_indices:
        layer = network.layers[index - 1]
        rows = count * int(np.prod(layer.out_shape[:-1], dtype=np.int64))
        unknowns = int(layer.weights.shape[0])
        if rows < unknowns:
            found["interpolation"] = (f"layer {index} ({layer.kind}) fits {unknowns} weights per output on "
                                      f"{rows} rows ({count} training samples): the solve interpolates the "
                                      f"training data, so expect a train error near 0 that says nothing of the test")
            break
    if count > 1 and (x.reshape(count, -1) == x.reshape(count, -1)[:1]).all():
        found["constant_inputs"] = (f"all {count} training inputs of {dataset.name} are identical: no fit can "
                                    f"tell the samples apart")
    return found


def check_data(network: zorb.Network, dataset) -> None:
    """ConfigError unless the training data is finite and of the network's shapes."""
    as_data("X", dataset.x_train, network.dtype, network.input_shape)
    as_data("Y", dataset.y_train, network.dtype, network.output_shape)
