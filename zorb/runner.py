"""Run one experiment from a composed config: load the data, build the network, fit,
evaluate and record everything in MLflow.

    python run.py dataset=iris network=iris solver.rcond=1e-9 seed=3   (Hydra, run.py)
    zorb.runner.main(cfg)                                            (tests, other tools)

Every setting is validated before any compute. A user-facing error (``zorb.ZorbError``)
marks the MLflow run FAILED and surfaces as ``RunFailed``: one sentence, which Hydra
prints without a traceback before exiting non-zero. In a multirun the other jobs go on.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import zorb
from zorb import baselines, hydra_callbacks, threads, tracking
from zorb.errors import ConfigError, ZorbError
from zorb.fit import as_data

log = logging.getLogger("zorb.runner")

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"

# Random streams derived from the seed for the runner's own row choices; the data registry
# uses [seed, 1] and [seed, 2] for its subsets.
_VALIDATION_STREAM = 3
_TRAIN_LIMIT_STREAM = 4
_TEST_LIMIT_STREAM = 5
LIMITS = ("train_samples", "test_samples", "width", "steps")


class RunFailed(CompactHydraException):
    """A run stopped by a user-facing error; ``str(error)`` is its one sentence."""


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    name: str
    rcond: float
    u_rcond: float | None
    b_rcond: float | None
    ridge: float
    per_layer: dict[int, dict[str, Any]]
    chunk_rows: int | None = None
    devices: int | str | None = None

    def fit_options(self) -> dict[str, Any]:
        return {"solver": self.name, "rcond": self.rcond, "u_rcond": self.u_rcond, "b_rcond": self.b_rcond,
                "ridge": self.ridge, "per_layer": self.per_layer, "chunk_rows": self.chunk_rows,
                "devices": self.devices}


def fit_zorb(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int,
             callback: Callable) -> tuple[zorb.Network, zorb.FitReport]:
    """ZORB: every dense/conv2d layer solved once by least squares."""
    return zorb.fit(network, dataset.x_train, dataset.y_train, seed=seed, callback=callback,
                    **solver.fit_options())


def fit_mlelm(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int,
              callback: Callable) -> tuple[zorb.Network, baselines.MLELMReport]:
    """ML-ELM (PAPER_EXPERIMENTS.md, A) with the solver's update cut (``u_rcond``, else ``rcond``)."""
    dense_only = all(layer.kind == "dense" for layer in network.layers if layer.parametric)
    if dense_only and (solver.ridge or solver.per_layer):  # baselines.fit_mlelm refuses the others itself
        raise ConfigError("ML-ELM is plain least squares with one cut: set solver.ridge=0 and leave "
                          "solver.per_layer empty")
    rcond = solver.rcond if solver.u_rcond is None else solver.u_rcond
    trained, report = baselines.fit_mlelm(network, dataset.x_train, dataset.y_train, rcond=rcond)
    for layer in report.layers:
        callback(layer)
    return trained, report


def fit_adam(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int, callback: Callable,
             learning_rate: float, steps: int, batch_size: int, loss: str, eval_every: int | None = None,
             eval_rows: int | None = None) -> tuple[zorb.Network, baselines.AdamReport]:
    """Adam (``zorb.baselines.train_adam``) from the same initial weights; the solver plays no part."""
    return baselines.train_adam(network, dataset.x_train, dataset.y_train, learning_rate=learning_rate,
                                steps=steps, batch_size=batch_size, loss=loss, seed=seed, eval_every=eval_every,
                                eval_rows=eval_rows)


METHODS: dict[str, Callable] = {"zorb": fit_zorb, "mlelm": fit_mlelm, "adam": fit_adam}
"""Training methods by ``method.name``: ``fn(network, dataset, solver, *, seed, callback, **options)``
returning ``(trained network, report)`` where the report has ``fit_seconds``,
``compile_seconds`` and ``layers`` (``zorb.LayerReport``s, possibly empty). ``options`` are
the method group's other keys, declared as keyword-only parameters (those without a default
are required). A report with a ``curve`` of ``(step, training seconds, train error)`` has it
logged as the metric histories ``curve.train_error`` and ``curve.train_seconds``."""


def main(cfg: DictConfig) -> dict[str, float]:
    """Run one experiment from a composed config; returns its metrics (what tests call).

    Raises ``RunFailed`` (one sentence) for a user-facing error, after marking the run
    FAILED; in a multirun, records this job's status for the sweep's parent run.
    """
    job = hydra_callbacks.current_job()
    status = FAILED
    try:
        metrics = run(cfg, job=job)
        status = FINISHED
        return metrics
    except ZorbError as error:
        log.error("%s", error)
        raise RunFailed(str(error)) from None
    finally:
        if job is not None:
            try:
                job.state.record_job(job.num, status)
            except Exception as error:  # the job's own outcome matters more than the bookkeeping
                log.error("could not record job %s in the sweep state: %s", job.num, error)


def cli(cfg: DictConfig) -> None:
    """``run.py``'s task: ``main``, with a single run's user-facing error printed as its
    one sentence (no traceback, no Hydra hint) and exit status 1. In a multirun the error
    goes to Hydra, which records the job as failed, runs the others and exits non-zero."""
    try:
        main(cfg)
    except RunFailed as error:
        if hydra_callbacks.current_job() is not None:
            raise
        sys.stderr.write(f"{error}\n")
        sys.exit(1)


def run(cfg: DictConfig | Mapping, *, job: hydra_callbacks.SweepJob | None = None) -> dict[str, float]:
    """Run the experiment ``cfg`` describes (a composed config, see ``conf/config.yaml``).

    Raises ``zorb.ZorbError`` for a bad setting, missing data or a failed fit.
    """
    config = _plain(cfg)
    thread_tags = _pin_threads(config, job)
    recorder = _open_run(config, job, thread_tags) if _get(config, "tracking", "enabled") else None
    try:
        config = apply_limits(config)
        if recorder is not None:
            recorder.log_params(tracking.flatten(config))
        metrics = _experiment(config, recorder)
    except BaseException as error:
        if recorder is not None:
            _close_failed(recorder, error)
        raise
    if recorder is not None:
        recorder.terminate(FINISHED)
        log.info("MLflow run %s FINISHED (%s)", recorder.run_id, recorder.artifact_uri)
    return metrics


def _plain(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The config as plain resolved Python containers."""
    try:
        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"the config cannot be resolved: {first_line}") from None


def _get(config: Mapping, *keys: str) -> Any:
    """``config[k1][k2]...`` with a ConfigError naming the missing key."""
    node: Any = config
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            path = ".".join(keys[: depth + 1])
            raise ConfigError(f"the config has no {path!r}: add it or pick a config that sets it")
        node = node[key]
    return node


def _hydra_config():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _pin_threads(config: Mapping, job) -> dict[str, str]:
    """Limit this job to its share of the cores before JAX starts (zorb/threads.py);
    returns tags describing the limit."""
    hydra_cfg = _hydra_config()
    launcher = str(OmegaConf.select(hydra_cfg, "launcher._target_") or "") if hydra_cfg is not None else ""
    workers = None
    if job is not None and "joblib" in launcher:
        workers = threads.joblib_workers(int(hydra_cfg.launcher.n_jobs), len(threads.available_cores()))
        state = job.state.read()
        expected = state and state.get("expected_jobs")
        if expected:
            workers = min(workers, int(expected))
    count = threads.threads_per_job(config.get("threads", "auto"), workers=workers)
    if count is None:
        return {"zorb.threads": "all", "zorb.cores": str(len(threads.available_cores()))}
    slot_dir = job.state.folder / ".cpu_slots" if workers is not None else None
    cores = threads.pin(count, slot_dir=slot_dir, slots=workers or 1)
    log.info("pinned to %d thread(s) on core(s) %s", count, ",".join(map(str, cores)))
    return {"zorb.threads": str(count), "zorb.cores": ",".join(map(str, cores))}


def _run_name(config: Mapping, job) -> str:
    name = f"{_get(config, 'dataset', 'name')}-{_get(config, 'network', 'name')}-seed{_get(config, 'seed')}"
    return name if job is None else f"{name} #{job.num}"


def _run_tags(config: Mapping, job) -> dict[str, str]:
    import jax

    hydra_cfg = _hydra_config()
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    tags = {
        **tracking.git_info(),
        **tracking.machine_info(),
        "hydra.overrides": " ".join(overrides),
        "jax.version": jax.__version__,
        "jax.backend": jax.default_backend(),
        "jax.devices": ", ".join(str(d) for d in jax.devices()),
        "dtype": str(config.get("dtype")),
        "dataset": str(_get(config, "dataset", "name")),
        "network": str(_get(config, "network", "name")),
        "method": str(_get(config, "method", "name")),
        "solver": str(_get(config, "solver", "name")),
        "zorb.role": "job" if job is not None else "run",
    }
    tags["mlflow.source.git.commit"] = tags["git.commit"]
    if hydra_cfg is not None:
        tags["hydra.output_dir"] = str(hydra_cfg.runtime.output_dir)
    tags.update(_experiment_tag())
    if job is not None:
        tags["zorb.sweep_dir"] = str(job.state.folder)
        tags["zorb.job_num"] = str(job.num)
    return tags


def _experiment_tag() -> dict[str, str]:
    """``{"zorb.experiment": <name>}`` when Hydra composed this run with experiment=<name>."""
    hydra_cfg = _hydra_config()
    choice = OmegaConf.select(hydra_cfg, "runtime.choices.experiment") if hydra_cfg is not None else None
    return {"zorb.experiment": str(choice)} if choice not in (None, "null") else {}


def _open_run(config: Mapping, job, extra_tags: Mapping[str, str]) -> tracking.RunRecorder:
    """Open this run's MLflow run (a child of the sweep's parent in a multirun) with its tags."""
    uri = tracking.resolve_tracking_uri(_get(config, "tracking", "uri"))
    experiment = str(_get(config, "tracking", "experiment"))
    parent_run_id = None
    if job is not None:
        # normally opened by MLflowSweepCallback.on_multirun_start; the first job opens it otherwise
        state = job.state.open_parent(tracking_uri=uri, experiment=experiment,
                                      expected_jobs=hydra_callbacks.count_jobs_in(job.state.folder),
                                      tags={**tracking.git_info(), **_experiment_tag()}, fresh=False)
        uri, parent_run_id = state["tracking_uri"], state["parent_run_id"]
        experiment_id = state["experiment_id"]
        client = tracking.client(uri)
    else:
        client = tracking.client(uri)
        experiment_id = tracking.experiment_id(client, uri, experiment)
    recorder = tracking.start_run(client, experiment_id, run_name=_run_name(config, job),
                                  tags={**_run_tags(config, job), **extra_tags},
                                  parent_run_id=parent_run_id)
    log.info("MLflow run %s in experiment %r at %s", recorder.run_id, experiment, uri)
    return recorder


def _close_failed(recorder: tracking.RunRecorder, error: BaseException) -> None:
    status = KILLED if isinstance(error, KeyboardInterrupt) else FAILED
    try:
        message = str(error) if isinstance(error, ZorbError) else f"{type(error).__name__}: {error}"
        recorder.set_tags({"error": message})
        _log_job_files(recorder)
    finally:
        recorder.terminate(status)
        log.info("MLflow run %s %s", recorder.run_id, status)


def solver_settings(config: Mapping) -> SolverSettings:
    """The solver group, validated (``zorb.check_solver_options``) before any compute."""
    solver = _get(config, "solver")
    name = _get(config, "solver", "name")
    rcond = solver.get("rcond", zorb.DEFAULT_RCOND)
    u_rcond, b_rcond, ridge = solver.get("u_rcond"), solver.get("b_rcond"), solver.get("ridge", 0.0)
    zorb.check_solver_options(name, rcond, u_rcond, b_rcond, ridge, str(config.get("dtype", "float64")))
    per_layer: dict[int, dict[str, Any]] = {}
    for key, options in (solver.get("per_layer") or {}).items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"solver.per_layer keys are 1-based layer positions, got {key!r}") from None
        if not isinstance(options, Mapping):
            raise ConfigError(f"solver.per_layer.{key} must be a mapping such as {{rcond: 1e-9}}, got {options!r}")
        per_layer[index] = dict(options)
    chunk_rows, devices = solver.get("chunk_rows"), solver.get("devices")
    _check_scale_options(name, per_layer, chunk_rows, devices)
    return SolverSettings(name=name, rcond=rcond, u_rcond=u_rcond, b_rcond=b_rcond, ridge=ridge,
                          per_layer=per_layer, chunk_rows=chunk_rows, devices=devices)


def _check_scale_options(name: str, per_layer: Mapping[int, Mapping[str, Any]], chunk_rows, devices) -> None:
    """``solver.chunk_rows`` (null or a positive integer) and ``solver.devices`` (null, a
    positive integer or "all"), and that every layer's solver can stream or split its rows
    when they ask for it (``zorb.fit`` checks the same, but only after the data is loaded)."""
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ConfigError(f"solver.chunk_rows must be a positive integer or null, got {chunk_rows!r}")
    if devices is not None and devices != "all" and \
            (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ConfigError(f"solver.devices must be a positive integer, 'all' or null, got {devices!r}")
    import jax

    available = jax.device_count()
    if isinstance(devices, int) and devices > available:
        raise ConfigError(f"solver.devices={devices} but JAX sees {available} device(s): use at most "
                          f"{available}, 'all' or null")
    count = available if devices == "all" else devices or 1
    used = [(None, name)] + [(index, options["solver"]) for index, options in per_layer.items()
                             if "solver" in options]
    for index, layer_solver in used:
        solver = zorb.SOLVERS.get(layer_solver) if isinstance(layer_solver, str) else None
        if solver is None or solver.streams:  # an unknown name fails in zorb.fit's own check
            continue
        where = f"solver.per_layer.{index}.solver={layer_solver}" if index is not None else f"solver={layer_solver}"
        if chunk_rows is not None:
            raise ConfigError(f"{where} needs the whole design matrix in memory, so it cannot stream rows with "
                              f"solver.chunk_rows: use solver=qr (the same answer) or gram, or solver.chunk_rows=null")
        if count > 1:
            raise ConfigError(f"{where} cannot split rows over {count} devices: use solver=qr (the same answer) "
                              f"or gram, or solver.devices=null")


def method_settings(config: Mapping) -> tuple[str, Callable, dict[str, Any]]:
    """``(name, function, options)`` of the method group, its options checked against the
    function's keyword-only parameters before any compute."""
    options = dict(_get(config, "method"))
    name = options.pop("name", None)
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    function = METHODS[name]
    accepted = [p for p in inspect.signature(function).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("seed", "callback")]
    names = [p.name for p in accepted]
    unknown = sorted(set(options) - set(names))
    if unknown:
        known = f"options: {', '.join(names)}" if names else "it takes none"
        raise ConfigError(f"method {name} has no option {unknown[0]!r} ({known})")
    missing = [p.name for p in accepted if p.default is inspect.Parameter.empty and p.name not in options]
    if missing:
        raise ConfigError(f"method {name} needs method.{missing[0]}: set it, or pick method={name} "
                          f"(conf/method/{name}.yaml sets every option)")
    return name, function, options


def _limits(config: Mapping) -> dict[str, int | None]:
    """The ``limits`` caps, each a positive integer or None."""
    limits = dict(config.get("limits") or {})
    unknown = sorted(set(limits) - set(LIMITS))
    if unknown:
        raise ConfigError(f"limits has no key {unknown[0]!r} (keys: {', '.join(LIMITS)})")
    for key in LIMITS:
        value = limits.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"limits.{key} must be a positive integer or null, got {value!r}")
        limits[key] = value
    return limits


def apply_limits(config: Mapping) -> dict[str, Any]:
    """``config`` with ``limits.width`` applied to the network's dense units and conv2d filters
    and ``limits.steps`` to the method's ``steps``, so that the params record what runs.
    ``limits.train_samples`` and ``limits.test_samples`` apply when the data is loaded."""
    limits = _limits(config)
    config = copy.deepcopy(dict(config))
    width, steps = limits["width"], limits["steps"]
    network = config.get("network")
    if width is not None and isinstance(network, Mapping):
        for spec in network.get("layers") or []:
            for key in ("units", "filters"):
                value = spec.get(key) if isinstance(spec, Mapping) else None
                if isinstance(value, int) and not isinstance(value, bool) and value > width:
                    spec[key] = width
    method = config.get("method")
    if steps is not None and isinstance(method, Mapping):
        value = method.get("steps")
        if isinstance(value, int) and not isinstance(value, bool) and value > steps:
            method["steps"] = steps
    return config


def _validation_fraction(config: Mapping) -> float:
    fraction = config.get("validation_fraction") or 0.0
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"validation_fraction must be a number in [0, 1), got {fraction!r}")
    return float(fraction)


def _init_paths(config: Mapping) -> tuple[Path | None, Path | None]:
    """``(init_file, init_out)`` as paths; init_file must exist."""
    init_file, init_out = config.get("init_file"), config.get("init_out")
    init_file = Path(str(init_file)).expanduser() if init_file else None
    init_out = Path(str(init_out)).expanduser() if init_out else None
    if init_file is not None and not init_file.is_file():
        raise ConfigError(f"init_file {init_file} does not exist: write it first with init_out={init_file} "
                          f"(and the same dataset, network and seed)")
    return init_file, init_out


def weights_digest(network: zorb.Network) -> str:
    """SHA-256 of the network's weight arrays (dtype, shape and bytes of each, in order)."""
    digest = hashlib.sha256()
    for weights in network.weights:
        array = np.ascontiguousarray(np.asarray(weights))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _layer_specs(config: Mapping) -> list[dict[str, Any]]:
    layers = _get(config, "network", "layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("network.layers must be a non-empty list of layer specs such as {type: dense, units: 10}")
    return [dict(spec) if isinstance(spec, Mapping) else spec for spec in layers]


def _load_dataset(config: Mapping):
    from zorb.data import load_dataset

    options = dict(_get(config, "dataset"))
    name = options.pop("name", None)
    if name is None:
        raise ConfigError("the config has no 'dataset.name'")
    known = ("train_samples", "test_samples", "balanced", "replace", "flatten", "download")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"dataset has no option {unknown[0]!r} (options: {', '.join(known)})")
    seed = _get(config, "seed")
    dataset = load_dataset(name, data_dir=_get(config, "data_dir"), seed=seed, **options)
    limits = _limits(config)
    dataset = _keep_rows(dataset, "train", limits["train_samples"], np.random.default_rng([seed, _TRAIN_LIMIT_STREAM]))
    return _keep_rows(dataset, "test", limits["test_samples"], np.random.default_rng([seed, _TEST_LIMIT_STREAM]))


def _rows_of(dataset, split: str, rows: np.ndarray) -> dict[str, Any]:
    labels = getattr(dataset, f"labels_{split}")
    return {f"x_{split}": getattr(dataset, f"x_{split}")[rows], f"y_{split}": getattr(dataset, f"y_{split}")[rows],
            f"labels_{split}": None if labels is None else labels[rows]}


def _keep_rows(dataset, split: str, cap: int | None, rng: np.random.Generator):
    """``dataset`` with at most ``cap`` rows of ``split`` (a random subset, in their order)."""
    count = len(getattr(dataset, f"x_{split}"))
    if cap is None or count <= cap:
        return dataset
    rows = np.sort(rng.choice(count, size=cap, replace=False))
    return dataclasses.replace(dataset, **_rows_of(dataset, split, rows))


def validation_split(dataset, fraction: float, seed: int):
    """``(rest, held_out)``: ``rest`` is ``dataset`` with only the training rows outside a
    seeded ``fraction`` of them; ``held_out`` is ``(x, y, task)`` of that fraction."""
    count = len(dataset.x_train)
    if count < 2:
        raise ConfigError(f"validation_fraction needs at least 2 training samples, {dataset.name} has {count}")
    held = min(count - 1, max(1, round(fraction * count)))
    order = np.random.default_rng([seed, _VALIDATION_STREAM]).permutation(count)
    keep, out = np.sort(order[held:]), np.sort(order[:held])
    rest = dataclasses.replace(dataset, **_rows_of(dataset, "train", keep))
    return rest, (dataset.x_train[out], dataset.y_train[out], dataset.task)


PROGRESS_AFTER_SECONDS = 10.0
"""A fit that has run this long sends each solved layer's metrics to MLflow at once."""


class _Progress:
    """The fit's callback: one log line per solved layer, and its metrics in MLflow.

    The fit's clock runs while the callback does, and one store write takes ~10 ms: as much
    as a whole small fit. So metrics wait for ``flush()`` after the fit until the fit has run
    ``PROGRESS_AFTER_SECONDS``; from then on (a long fit, where a write is noise) each layer's
    go out at once and the UI shows the progress.
    """

    def __init__(self, network: zorb.Network, recorder: tracking.RunRecorder | None):
        self.total = len(network.parametric_indices)
        self.recorder = recorder
        self.done = 0
        self.pending: dict[str, float] = {}
        self.started = time.perf_counter()

    def __call__(self, report) -> None:
        self.done += 1
        rows, cols = report.design_shape
        log.info("layer %d (%s, %d/%d): [A, 1] %d x %d, solve %.3f s, targets %.3f s, compile %.2f s, "
                 "rank %d/%d, cond %.3g", report.index, report.kind, self.done, self.total, rows, cols,
                 report.solve_seconds, report.target_seconds, report.compile_seconds, report.rank,
                 min(rows, cols), report.cond)
        self.pending.update(layer_metrics(report))
        if time.perf_counter() - self.started >= PROGRESS_AFTER_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.recorder is not None and self.pending:
            self.recorder.log_metrics(self.pending)
        self.pending = {}


def layer_metrics(report) -> dict[str, float]:
    """``layer{i}.<figure>`` for one solved layer (``i`` its 1-based position)."""
    prefix = f"layer{report.index}."
    return {prefix + "solve_seconds": report.solve_seconds, prefix + "rank": report.rank,
            prefix + "cond": report.cond, prefix + "cutoff": report.cutoff,
            prefix + "target_seconds": report.target_seconds, prefix + "forward_seconds": report.forward_seconds,
            prefix + "compile_seconds": report.compile_seconds}


def _experiment(config: Mapping, recorder: tracking.RunRecorder | None) -> dict[str, float]:
    method_name, fit_method, options = method_settings(config)
    solver = solver_settings(config)
    specs = _layer_specs(config)
    seed = _get(config, "seed")
    validation = _validation_fraction(config)
    init_file, init_out = _init_paths(config)
    started = time.perf_counter()
    dataset = _load_dataset(config)
    data_seconds = time.perf_counter() - started
    network = zorb.build_network(specs, dataset.input_shape, output_dim=dataset.output_dim, seed=seed,
                                 dtype=str(config.get("dtype", "float64")))
    if init_file is not None:
        network = baselines.load_initial_weights(network, init_file)
        log.info("initial weights from %s", init_file)
    if init_out is not None:
        init_out.parent.mkdir(parents=True, exist_ok=True)
        baselines.save_initial_weights(network, init_out)
        log.info("initial weights written to %s", init_out)
    if recorder is not None:
        recorder.set_tags({"zorb.init_sha256": weights_digest(network)})
    log.info("%s: %d train / %d test samples, input %s, %d outputs (%s)", dataset.name,
             len(dataset.x_train), len(dataset.x_test), dataset.input_shape, dataset.output_dim, dataset.task)
    log.info("network %s:\n%s", config["network"]["name"], network.describe())
    settings = ", ".join(f"{key} {value}" for key, value in options.items()) or \
        f"solver {solver.name}, rcond {solver.rcond:g}, ridge {solver.ridge:g}" + \
        "".join(f", {key} {value}" for key, value in (("chunk_rows", solver.chunk_rows), ("devices", solver.devices))
                if value is not None)
    log.info("fitting %d layer(s) with %s: %s", len(network.parametric_indices), method_name, settings)

    # Checked before any method runs: a bad array fails here, and the check's one-time
    # compilation per shape stays out of the methods' clocks (zorb.fit times its own check).
    _check_data(network, dataset)
    progress = _Progress(network, recorder)
    trained, report = fit_method(network, dataset, solver, seed=seed, callback=progress, **options)
    progress.flush()

    started = time.perf_counter()
    batch = config.get("eval_batch_size")
    train = zorb.evaluate(trained, dataset.x_train, dataset.y_train, task=dataset.task, batch_size=batch)
    test = zorb.evaluate(trained, dataset.x_test, dataset.y_test, task=dataset.task, batch_size=batch)
    eval_seconds = time.perf_counter() - started

    metrics = {f"train_{k}": v for k, v in train.items()}
    metrics.update({f"test_{k}": v for k, v in test.items()})
    metrics.update(fit_seconds=report.fit_seconds, compile_seconds=report.compile_seconds,
                   data_seconds=data_seconds, eval_seconds=eval_seconds,
                   train_samples=len(dataset.x_train), test_samples=len(dataset.x_test))
    summary = ", ".join(f"{k} {metrics[k]:.4g}" for k in ("train_accuracy", "test_accuracy", "train_error",
                                                         "test_error") if k in metrics)
    log.info("done: %s; fit %.2f s (+ %.2f s compile)", summary, report.fit_seconds, report.compile_seconds)
    if validation:
        metrics.update(_validation_metrics(fit_method, network, dataset, solver, seed, options, validation, batch))

    if recorder is not None:
        recorder.log_metrics(metrics)
        _log_curve(recorder, report)
        _log_artifacts(recorder, config, trained, report)
    for layer in report.layers:
        metrics.update(layer_metrics(layer))
    return metrics


def _validation_metrics(fit_method: Callable, network: zorb.Network, dataset, solver: SolverSettings, seed: int,
                        options: Mapping[str, Any], fraction: float, batch: int | None) -> dict[str, float]:
    """``val_*``: the method fitted again, from the same initial weights, on the training rows
    outside a seeded ``fraction`` of them, and scored on those held-out rows."""
    rest, (x_val, y_val, task) = validation_split(dataset, fraction, seed)
    _check_data(network, rest)
    trained, report = fit_method(network, rest, solver, seed=seed, callback=lambda layer: None, **options)
    scores = zorb.evaluate(trained, x_val, y_val, task=task, batch_size=batch)
    metrics = {f"val_{k}": v for k, v in scores.items()}
    metrics.update(val_samples=len(x_val), val_fit_seconds=report.fit_seconds)
    log.info("validation: fitted on %d samples, %d held out: val_error %.4g", len(rest.x_train), len(x_val),
             metrics["val_error"])
    return metrics


def _check_data(network: zorb.Network, dataset) -> None:
    """ConfigError unless the training data is finite and of the network's shapes."""
    as_data("X", dataset.x_train, network.dtype, network.input_shape)
    as_data("Y", dataset.y_train, network.dtype, network.output_shape)


def _log_curve(recorder: tracking.RunRecorder, report) -> None:
    """A report's ``curve`` of ``(step, training seconds, train error)`` as two metric histories
    whose steps are the method's steps: ``curve.train_error`` and ``curve.train_seconds``."""
    curve = getattr(report, "curve", None)
    if not curve:
        return
    recorder.log_metric_history("curve.train_error", [(step, error) for step, _, error in curve])
    recorder.log_metric_history("curve.train_seconds", [(step, seconds) for step, seconds, _ in curve])


def _log_artifacts(recorder: tracking.RunRecorder, config: Mapping, trained: zorb.Network, report) -> None:
    """Spectra (one .npy per solved layer, a JSON summary, one figure), the model, configs, log."""
    from zorb.plots import spectra_figure

    with tempfile.TemporaryDirectory() as folder:
        spectra = Path(folder) / "spectra"
        spectra.mkdir()
        summary = []
        for layer in report.layers:
            np.save(spectra / f"layer{layer.index}.npy", np.asarray(layer.spectrum, dtype=np.float64))
            summary.append({"index": layer.index, "kind": layer.kind, "design_shape": list(layer.design_shape),
                            "solver": layer.solver, "u_rcond": layer.u_rcond, "b_rcond": layer.b_rcond,
                            "ridge": layer.ridge, "cutoff": layer.cutoff, "rank": layer.rank,
                            "cond": layer.cond if math.isfinite(layer.cond) else str(layer.cond)})
        (spectra / "summary.json").write_text(json.dumps(summary, indent=2))
        if report.layers:
            figure = spectra_figure(report.layers, title=f"{config['dataset']['name']} / "
                                                         f"{config['network']['name']}: spectra of [A, 1]")
            figure.savefig(spectra / "spectra.png", dpi=110)
        recorder.log_dir(spectra, "spectra")
        if _get(config, "tracking").get("log_model", True):
            model = Path(folder) / "model.npz"
            zorb.save(trained, model)
            recorder.log_file(model, "model")
    recorder.log_text(OmegaConf.to_yaml(OmegaConf.create(config)), "config.yaml")
    _log_job_files(recorder)


def _log_job_files(recorder: tracking.RunRecorder) -> None:
    """Hydra's record of the job (config.yaml, hydra.yaml, overrides.yaml) and its log file."""
    hydra_cfg = _hydra_config()
    if hydra_cfg is None:
        return
    output = Path(str(hydra_cfg.runtime.output_dir))
    if hydra_cfg.output_subdir is not None and (output / str(hydra_cfg.output_subdir)).is_dir():
        recorder.log_dir(output / str(hydra_cfg.output_subdir), "hydra")
    job_log = output / f"{hydra_cfg.job.name}.log"
    if job_log.is_file():
        for handler in logging.getLogger().handlers:
            handler.flush()
        recorder.log_file(job_log, "logs")
