"""MLflow at the edge of zorb: where the store is, and what one run records.

The store is ``tracking.uri`` if set, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<project root>/mlflow.db``. For a SQLite store, experiments created here keep
their artifacts beside the database (``<store dir>/mlartifacts/<experiment>``), whichever
process or directory a run starts from.

Nothing here runs JAX: the algorithm never sees MLflow.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STORE_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# MLflow's limits on one param value and on one tag value (characters).
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
# MLflow's limit on the metrics of one log_batch request.
MAX_METRICS_PER_BATCH = 1000
# SQLite lets one writer in at a time; MLflow's requests wait this long on a locked store.
SQLITE_RETRIES = 8
# The experiment tag MLflow 3's UI reads to choose its mode, and its value for model training
# (without it the UI opens an experiment on the GenAI traces page, not on its runs).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def project_root() -> Path:
    """The directory holding ``conf/`` and ``run.py`` when zorb runs from its checkout,
    else the directory the program was started in."""
    if (PROJECT_ROOT / "conf").is_dir():
        return PROJECT_ROOT
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except ImportError:
        pass
    return Path.cwd()


def default_tracking_uri() -> str:
    return f"sqlite:///{project_root() / STORE_NAME}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else the project's SQLite store.

    A relative SQLite path is made absolute against the current directory, so that every
    process of a sweep (and the UI) opens the same file.
    """
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    path = sqlite_path(chosen)
    if path is not None and not path.is_absolute():
        chosen = f"sqlite:///{path.resolve()}"
    return chosen


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite store, else the store's default."""
    path = sqlite_path(uri)
    if path is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("_") or "experiment"
    return (path.parent / ARTIFACTS_DIR / slug).as_uri()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``path`` across processes (the file is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _store_lock_path(uri: str) -> Path | None:
    # "<db>-zorb.lock": beside the store, and matched by the ignore rule for SQLite's own
    # "<db>-journal" files, so it never makes a checkout look dirty.
    path = sqlite_path(uri)
    return None if path is None else path.with_name(path.name + "-zorb.lock")


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise store creation and experiment creation across processes (SQLite only)."""
    lock = _store_lock_path(uri)
    if lock is None:
        yield
    else:
        with file_lock(lock):
            yield


def _quiet_mlflow_loggers() -> None:
    # Migrations of a fresh store log a line per step at INFO; they say nothing about a run.
    for name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


DUPLICATE_ROW = ("UNIQUE constraint failed", "unique constraint", "Duplicate entry")
"""How SQLite, PostgreSQL and MySQL word a unique-key violation (in MLflow's error, or in a
tracking server's answer)."""


def retrying(call, *args, races: tuple[str, ...] = (), **kwargs):
    """``call(*args, **kwargs)``, retried with backoff while SQLite reports a locked store, or
    while its error holds one of ``races``: a race with another process that the next try
    resolves."""
    for attempt in range(SQLITE_RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as error:  # MLflow wraps the driver's OperationalError in its own types
            found = next((race for race in ("database is locked", *races) if race in str(error)), None)
            if found is None or attempt == SQLITE_RETRIES - 1:
                raise
            delay = 0.1 * 2 ** attempt
            log.warning("MLflow store: %s; retrying in %.1f s", found, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def import_store() -> None:
    """Import MLflow's client and its SQL store (~2 s of Python), as opening a SQLite store
    would: what a writer process does while its run starts (``zorb.runner.writer``)."""
    from mlflow.tracking import MlflowClient  # noqa: F401

    try:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    except ImportError:  # an MLflow without SQL stores opens other stores still
        pass


@functools.lru_cache(maxsize=None)
def client(uri: str):
    """An ``MlflowClient`` for ``uri``; a new SQLite store is created under the store lock.
    One per store and process: a sweep's jobs in one process share it."""
    from mlflow.tracking import MlflowClient

    _quiet_mlflow_loggers()
    path = sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with store_lock(uri):
            made = MlflowClient(tracking_uri=uri)
            # The first request creates (or migrates) the tables: do it while holding the lock.
            retrying(made.search_experiments, max_results=1)
        return made
    return MlflowClient(tracking_uri=uri)


@functools.lru_cache(maxsize=None)
def experiment_id(mlflow_client, uri: str, name: str) -> str:
    """The id of experiment ``name``, created (with its artifact location) if missing, and
    looked up once per process; the experiment carries ``EXPERIMENT_KIND_TAG`` (set here on
    one made without it)."""
    with store_lock(uri):
        found = retrying(mlflow_client.get_experiment_by_name, name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                from zorb.errors import ConfigError

                raise ConfigError(f"MLflow experiment {name!r} is deleted in {uri}: restore it "
                                  f"(mlflow experiments restore) or choose another tracking.experiment")
            if EXPERIMENT_KIND_TAG not in found.tags:
                retrying(mlflow_client.set_experiment_tag, found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        try:
            return retrying(mlflow_client.create_experiment, name, artifact_location=artifact_location(uri, name),
                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception as error:
            if "already exists" not in str(error).lower():
                raise
            return retrying(mlflow_client.get_experiment_by_name, name).experiment_id


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """A nested dict/list as ``{"a.b.1.c": "value"}``: the shape MLflow params take.

    List items are numbered from 1, as layers are everywhere in zorb's records
    (``network.layers.3.units`` is layer 3, whose figures are ``layer3.*``). Values are
    written as YAML would read them back (``null``, ``true``, numbers as Python prints
    them); an empty dict or list is kept as ``{}`` / ``[]``.
    """
    items: dict[str, str] = {}
    if isinstance(config, Mapping) and config:
        for key, value in config.items():
            items.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(config, (list, tuple)) and config:
        for index, value in enumerate(config, 1):
            items.update(flatten(value, f"{prefix}{index}."))
    else:
        items[prefix[:-1]] = _param_text(config)
    return items


def _param_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def git_info(root: Path | None = None) -> dict[str, str]:
    """``{"git.commit": sha or "unknown", "git.dirty": "true"/"false"/"unknown"}``.

    Dirty means tracked files differ from the commit or untracked, not ignored files exist.
    Asked once per process and checkout (the state when the process's first run started).
    """
    return dict(_git_info(root or project_root()))


@functools.lru_cache(maxsize=None)
def _git_info(root: Path) -> dict[str, str]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = git("status", "--porcelain")
    dirty = "unknown" if status is None else ("true" if status.strip() else "false")
    return {"git.commit": commit.strip(), "git.dirty": dirty}


@functools.lru_cache(maxsize=1)
def machine_info() -> dict[str, str]:
    """``machine.cpu`` (the CPU's model name), ``machine.cpus`` (logical CPUs), ``machine.platform``."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine.cpu": model, "machine.cpus": str(os.cpu_count()), "machine.platform": platform.platform()}


def finite_or_max(value: float) -> float:
    """MLflow stores floats; an infinite condition number is kept as the largest double."""
    if math.isnan(value):
        return value
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value)
    return float(value)


class Records:
    """What every recorder does through its own ``log_points``, ``log_text`` and ``log_file``:
    ``RunRecorder`` (this process writes) and ``zorb.runner.writer.RemoteRecorder`` (a writer
    process does)."""

    def log_metric_history(self, key: str, points: list[tuple[int, float]]) -> None:
        """One metric's history, ``(step, value)`` per point."""
        self.log_points([(key, value, step) for step, value in points])

    def log_json(self, data: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=_json_default), artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(artifact_file).name
            figure.savefig(path, dpi=110)
            parent = str(Path(artifact_file).parent)
            self.log_file(path, None if parent == "." else parent)


class RunRecorder(Records):
    """Writes one MLflow run: params, tags, metrics and artifacts, then its final status."""

    def __init__(self, mlflow_client, run_id: str, experiment_id: str | None = None):
        self.client = mlflow_client
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        retrying(self.client.log_batch, self.run_id,
                 params=[Param(k, v) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        retrying(self.client.log_batch, self.run_id,
                 tags=[RunTag(k, str(v)[:MAX_TAG_LENGTH]) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, model_id: str | None = None) -> None:
        """Metrics at one step; with ``model_id``, also the metrics of that logged model."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        retrying(self.client.log_batch, self.run_id,
                 metrics=[Metric(k, finite_or_max(float(v)), stamp, step, model_id=model_id)
                          for k, v in metrics.items()])

    def log_points(self, points: list[tuple[str, float, int]], model_id: str | None = None) -> None:
        """Metric values at steps, ``(key, value, step)`` each, in batches MLflow accepts; with
        ``model_id``, also that logged model's."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, finite_or_max(float(value)), stamp, int(step), model_id=model_id)
                   for key, value, step in points]
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            retrying(self.client.log_batch, self.run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])

    def log_datasets(self, specs: list[Mapping[str, Any]]) -> None:
        """The run's inputs, one ``dataset_spec`` each (plain data: what a writer process
        receives), tagged with their context (``train``, ``test``)."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = [DatasetInput(dataset_entity(spec), tags=[InputTag(MLFLOW_DATASET_CONTEXT, spec["context"])])
                  for spec in specs]
        # MLflow looks a dataset up by experiment, name and digest, then inserts it if absent: two
        # jobs of a sweep logging the same data at the same moment can both miss it, and the
        # second insert then breaks the key. Tried again, it finds the first job's row.
        retrying(self.client.log_inputs, self.run_id, datasets=inputs, races=DUPLICATE_ROW)

    def log_network(self, network_file: str, dtype: str, input_shape: list[int], output_shape: list[int],
                    requirements: list[str], name: str = "model") -> str:
        """zorb's ``.npz`` of a trained network as the MLflow model ``runs:/<run id>/<name>``
        (a logged model of flavour ``pyfunc``, ``zorb.runner.mlflow_model`` its loader);
        ``requirements`` (pip lines) gain MLflow's own version. Returns the model's id."""
        import warnings

        import mlflow
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        import numpy as np

        warmed_up()
        kind = np.dtype(dtype)
        signature = ModelSignature(inputs=Schema([TensorSpec(kind, (-1, *input_shape))]),
                                   outputs=Schema([TensorSpec(kind, (-1, *output_shape))]))
        with tempfile.TemporaryDirectory() as folder:
            model = Path(folder) / name
            with warnings.catch_warnings():
                # an input example would cost a prediction (and its compilation) per run
                warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
                # the requirements named, so MLflow does not load the model in a subprocess to guess them
                mlflow.pyfunc.save_model(str(model), loader_module="zorb.runner.mlflow_model",
                                         data_path=network_file, signature=signature,
                                         pip_requirements=[*requirements, f"mlflow=={mlflow.__version__}"])
            return self.log_model(model, name)

    def log_model(self, local_dir: Path, name: str) -> str:
        """An MLflow model saved in ``local_dir`` as this run's logged model ``name``
        (``runs:/<run id>/<name>``); returns the model's id."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        experiment = retrying(self.client.get_run, self.run_id).info.experiment_id
        model = retrying(self.client.create_logged_model, experiment, name=name, source_run_id=self.run_id)
        retrying(self.client.log_model_artifacts, model.model_id, str(local_dir))
        retrying(self.client.finalize_logged_model, model.model_id, LoggedModelStatus.READY)
        retrying(self.client.log_outputs, self.run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id

    def log_spectra(self, folder: Path | str, title: str) -> None:
        """A run's ``spectra/`` folder (``layer{i}.npy`` and ``summary.json``, written by
        ``zorb.runner.records.log_artifacts``) with its figures drawn into it first
        (``zorb.runner.plots.draw_spectra``)."""
        from zorb.runner.plots import draw_spectra

        draw_spectra(Path(folder), title)
        self.log_dir(Path(folder), "spectra")

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        retrying(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_dir(self, path: Path, artifact_path: str | None = None) -> None:
        retrying(self.client.log_artifacts, self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        retrying(self.client.log_text, self.run_id, text, artifact_file)

    def ready(self) -> None:
        """The run is open (a writer process's recorder waits here, ``zorb.runner.writer``)."""

    def terminate(self, status: str) -> None:
        retrying(self.client.set_terminated, self.run_id, status)

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri


def dataset_spec(context: str, name: str, digest: str, source: Mapping[str, str], features, targets) -> dict:
    """What an MLflow dataset input records of ``features`` and ``targets`` (arrays), as plain
    data: their dtypes and shapes, the name, the digest and the source's fields."""
    return {"context": context, "name": name, "digest": digest, "source": dict(source),
            "features": [features.dtype.str, list(features.shape)],
            "targets": [targets.dtype.str, list(targets.shape)]}


def dataset_entity(spec: Mapping[str, Any]):
    """The MLflow dataset entity of a ``dataset_spec``: that of ``mlflow.data.from_numpy`` on
    the arrays themselves (its schema and profile read only their dtypes and shapes, which
    zero-strided stand-ins of no memory carry)."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource

    import numpy as np

    features, targets = (np.broadcast_to(np.zeros((), dtype=np.dtype(kind)), tuple(shape))
                         for kind, shape in (spec["features"], spec["targets"]))
    return mlflow.data.from_numpy(features, targets=targets, source=CodeDatasetSource(dict(spec["source"])),
                                  name=spec["name"], digest=spec["digest"])._to_mlflow_entity()


def warm_up() -> threading.Thread:
    """Import what logging a finished run needs (MLflow's model and dataset modules, the
    figures) and fill MLflow's map of installed packages, in a background thread: started when a
    process opens its first run, it overlaps the data load, the compilation and the fit
    (which run without the GIL) instead of adding ~2 s after them. The map (0.8 s: a scan
    of every installed package) is what ``mlflow.pyfunc.save_model`` checks a model's
    requirements against; it is private to MLflow, so it is only warmed where it exists.
    Once per process: a sweep's later jobs find it all loaded."""
    global _warm_up
    if _warm_up is not None:
        return _warm_up

    def work():
        try:
            import mlflow.data.code_dataset_source  # noqa: F401
            import mlflow.pyfunc  # noqa: F401
            from mlflow.utils import requirements_utils

            import zorb.runner.plots  # noqa: F401
            getattr(requirements_utils, "_init_modules_to_packages_map", lambda: None)()
        except Exception as error:  # an optimisation: the logging itself imports what it needs
            log.debug("warming up MLflow's logging failed: %s", error)

    _warm_up = threading.Thread(target=work, name="zorb-warm-up-mlflow", daemon=True)
    _warm_up.start()
    return _warm_up


_warm_up: threading.Thread | None = None


def warmed_up() -> None:
    """Wait for ``warm_up``'s thread: MLflow's package map must not be read while the thread
    is still filling it."""
    if _warm_up is not None:
        _warm_up.join()


def _json_default(value: Any):
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def start_run(mlflow_client, experiment: str, *, run_name: str, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None) -> RunRecorder:
    """Open a run (a child of ``parent_run_id`` when given) and return its recorder."""
    all_tags = {k: str(v)[:MAX_TAG_LENGTH] for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = retrying(mlflow_client.create_run, experiment, run_name=run_name, tags=all_tags)
    return RunRecorder(mlflow_client, run.info.run_id, experiment)


def open_run(uri: str, experiment: str, *, run_name: str, tags: Mapping[str, Any]) -> RunRecorder:
    """Open a run in experiment ``experiment`` (by name, created if missing) of store ``uri``."""
    mlflow_client = client(uri)
    return start_run(mlflow_client, experiment_id(mlflow_client, uri, experiment), run_name=run_name, tags=tags)
