"""One MLflow parent run per Hydra multirun, one child run per job, none left RUNNING.

Jobs may run in this process (basic launcher), in worker processes (joblib) or on other
machines (submitit), so nothing is shared in memory. The sweep's state lives in a JSON
file in the sweep directory, read and written under an ``fcntl`` lock:

    {"parent_run_id", "experiment_id", "tracking_uri", "expected_jobs",
     "jobs": {"<job num>": "FINISHED" | "FAILED" | "KILLED"},
     "closed": null | "FINISHED" | "FAILED" | "KILLED", "launcher": {"pid", "started"}}

- ``on_multirun_start`` (the launching process) creates the parent run and the file, and
  counts the sweep's jobs.
- Each job (``zorb.runner.job``) opens its child run with ``mlflow.parentRunId`` set to the
  parent, creating the parent itself if no callback did. When it ends, success or failure,
  it records its status; the job that records the last expected job closes the parent:
  FAILED if any job failed, else FINISHED. ``on_job_end`` records too (idempotent), which
  covers a job that failed outside zorb's code.
- ``on_multirun_end`` closes the parent if it is still open and logs the sweep's table and
  figure on it (``zorb.runner.sweeps``). Hydra skips it when a job failed, so the launching
  process also closes an open parent when it exits (FAILED unless every expected job
  finished).

``DataCheckCallback`` runs first: a multirun whose jobs all read one image dataset (an
experiment such as paper_b) checks that its files are present before any job starts, so a
missing download is one sentence instead of one failed job per sweep point.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zorb.runner import tracking

log = logging.getLogger(__name__)

# conf/hydra/launcher/{joblib,submitit_slurm}.yaml replace the plugins' defaults under the
# same names and carry every field, so Hydra's check against the plugins' schemas passes;
# its notice that such same-name matching is deprecated says nothing to a user. This module
# is imported by run.py and, through the callback, by every joblib worker before it
# composes its job's config.
warnings.filterwarnings("ignore", category=UserWarning,
                        message=r"\s*'hydra/launcher/(joblib|submitit_slurm)' is validated against ConfigStore schema")

STATE_FILE = ".zorb_mlflow_sweep.json"
LOCK_FILE = ".zorb_mlflow_sweep.lock"
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; keep the module importable alone
    Callback = object  # type: ignore[misc,assignment]

# Keys whose sweep gives jobs different datasets or data folders (the pre-flight check then
# leaves each job to check its own).
DATA_KEYS = ("dataset", "dataset.name", "dataset.download", "data_dir")


def sweep_dir_of(hydra_cfg: DictConfig) -> Path:
    """The absolute sweep directory (relative ones are taken from Hydra's original cwd)."""
    folder = Path(str(hydra_cfg.sweep.dir))
    if not folder.is_absolute():
        cwd = OmegaConf.select(hydra_cfg, "runtime.cwd") or os.getcwd()
        folder = Path(cwd) / folder
    return folder


def _sweep_overrides(hydra_cfg: DictConfig) -> list:
    """The parsed overrides a basic sweep expands: ``hydra.sweeper.params``, then the command line's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(hydra_cfg, "sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False))
    return OverridesParser.create().parse_overrides(arguments)


def swept_keys(config: DictConfig) -> set[str] | None:
    """The config keys (or groups) that take several values in this multirun; None if unknown."""
    try:
        return {o.key_or_group for o in _sweep_overrides(config.hydra) if o.is_sweep_override()}
    except Exception as error:
        log.debug("cannot read the sweep's overrides: %s", error)
        return None


def swept_keys_tag(config: DictConfig) -> dict[str, str]:
    """``{"zorb.swept_keys": "dataset,seed"}``: the keys this multirun sweeps, in the order
    given (what ``zorb.runner.sweeps`` groups its table by); empty if unknown."""
    from zorb.runner.sweeps import SWEPT_KEYS_TAG

    try:
        keys = [o.key_or_group for o in _sweep_overrides(config.hydra) if o.is_sweep_override()]
    except Exception as error:
        log.debug("cannot read the sweep's overrides: %s", error)
        return {}
    return {SWEPT_KEYS_TAG: ",".join(dict.fromkeys(keys))} if keys else {}


def saved_sweep_tags(folder: Path) -> dict[str, str]:
    """``swept_keys_tag`` of the sweep whose config Hydra saved in ``<folder>/multirun.yaml``."""
    saved = folder / "multirun.yaml"
    return swept_keys_tag(OmegaConf.load(saved)) if saved.is_file() else {}


def experiment_choice(config: DictConfig) -> str | None:
    """The ``experiment`` group's option this config was composed with, if any."""
    choice = OmegaConf.select(config, "hydra.runtime.choices.experiment")
    return None if choice in (None, "null") else str(choice)


def count_jobs(config: DictConfig) -> int | None:
    """Number of jobs Hydra's basic sweeper makes of this multirun (None if unknown:
    another sweeper, or a sweep the parser cannot expand on its own, e.g. glob())."""
    hydra_cfg = config.hydra
    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_") or "")
    if not target.endswith("BasicSweeper"):
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        batches = BasicSweeper.split_arguments(_sweep_overrides(hydra_cfg), None)
        return sum(len(batch) for batch in batches)
    except Exception as error:  # a sweep we cannot count is closed by the launching process
        log.debug("cannot count the jobs of this sweep: %s", error)
        return None


def count_jobs_in(folder: Path) -> int | None:
    """``count_jobs`` of the sweep whose config Hydra saved as ``<folder>/multirun.yaml``
    before launching it (None if absent)."""
    saved = folder / "multirun.yaml"
    if not saved.is_file():
        return None
    return count_jobs(OmegaConf.load(saved))


@dataclass
class SweepState:
    """The shared state file of one sweep directory."""

    folder: Path

    @property
    def path(self) -> Path:
        return self.folder / STATE_FILE

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any] | None]:
        """Hold the sweep's lock; yield its state (None if absent) and write back changes."""
        with tracking.file_lock(self.folder / LOCK_FILE):
            state = json.loads(self.path.read_text()) if self.path.exists() else None
            box = {"state": state}
            yield box
            if box["state"] is not None and box["state"] != state:
                temporary = self.path.with_suffix(".tmp")
                temporary.write_text(json.dumps(box["state"], indent=2))
                temporary.replace(self.path)

    def read(self) -> dict[str, Any] | None:
        with self.locked() as box:
            return box["state"]

    def open_parent(self, *, tracking_uri: str, experiment: str, expected_jobs: int | None,
                    tags: dict[str, Any], fresh: bool) -> dict[str, Any]:
        """The sweep's parent run, created if there is none (always, when ``fresh``)."""
        with self.locked() as box:
            if box["state"] is not None and not fresh:
                return box["state"]
            client = tracking.client(tracking_uri)
            experiment_id = tracking.experiment_id(client, tracking_uri, experiment)
            parent = tracking.start_run(client, experiment_id, run_name=f"sweep {self.folder.name}",
                                        tags={**tags, "zorb.sweep_dir": str(self.folder),
                                              "zorb.role": "sweep"})
            parent.log_params({"sweep.jobs": "unknown" if expected_jobs is None else str(expected_jobs)})
            box["state"] = {"parent_run_id": parent.run_id, "experiment_id": experiment_id,
                            "tracking_uri": tracking_uri, "expected_jobs": expected_jobs,
                            "jobs": {}, "closed": None, "launcher": launcher_process() if fresh else None}
            log.info("MLflow parent run %s for sweep %s", parent.run_id, self.folder)
            return box["state"]

    def record_job(self, job_num: int | str, status: str) -> None:
        """Record a job's final status (the first record wins); close the parent after the
        last expected job."""
        with self.locked() as box:
            state = box["state"]
            if state is None:
                return
            state = json.loads(json.dumps(state))
            state["jobs"].setdefault(str(job_num), status)
            expected = state["expected_jobs"]
            if state["closed"] is None and expected is not None and len(state["jobs"]) >= expected:
                state["closed"] = _close_parent(state, complete=True)
            box["state"] = state

    def close(self) -> str | None:
        """Close the parent if still open (FAILED unless every expected job finished)."""
        with self.locked() as box:
            state = box["state"]
            if state is None or state["closed"] is not None:
                return None if state is None else state["closed"]
            state = json.loads(json.dumps(state))
            expected = state["expected_jobs"]
            complete = expected is None or len(state["jobs"]) >= expected
            state["closed"] = _close_parent(state, complete=complete)
            box["state"] = state
            return state["closed"]


def launcher_process() -> dict[str, Any]:
    """``{"pid", "started"}`` of this process, the one that launches the sweep's jobs, for its
    workers to watch (``zorb.runner.lifecycle.watch_parent``)."""
    from zorb.runner.lifecycle import start_time

    return {"pid": os.getpid(), "started": start_time(os.getpid())}


def _close_parent(state: dict[str, Any], *, complete: bool) -> str:
    statuses = list(state["jobs"].values())
    status = FINISHED if complete and statuses and all(s == FINISHED for s in statuses) else FAILED
    if statuses and all(s == KILLED for s in statuses):  # the sweep itself was stopped
        status = KILLED
    client = tracking.client(state["tracking_uri"])
    parent = tracking.RunRecorder(client, state["parent_run_id"])
    parent.log_metrics({"jobs_finished": statuses.count(FINISHED), "jobs_failed": statuses.count(FAILED),
                        "jobs_killed": statuses.count(KILLED)})
    parent.terminate(status)
    log.info("MLflow parent run %s closed %s (%d finished, %d failed)", state["parent_run_id"], status,
             statuses.count(FINISHED), statuses.count(FAILED))
    return status


@dataclass(frozen=True)
class SweepJob:
    """This process's job of a multirun: where the sweep keeps its state, and its number."""

    state: SweepState
    num: int


def current_job() -> SweepJob | None:
    """The running Hydra job if it belongs to a multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return SweepJob(SweepState(sweep_dir_of(hydra_cfg)), int(hydra_cfg.job.num))


def sweep_tags(config: DictConfig) -> dict[str, str]:
    overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    tags = {**tracking.git_info(), "hydra.overrides": " ".join(overrides),
            "hydra.launcher": str(OmegaConf.select(config, "hydra.launcher._target_"))}
    experiment = experiment_choice(config)
    if experiment:
        tags["zorb.experiment"] = experiment
    return {**tags, **swept_keys_tag(config)}


ZORB_CALLBACKS = (f"{__name__}.DataCheckCallback", f"{__name__}.MLflowSweepCallback")
"""The only ``hydra.callbacks`` targets run.py lets Hydra instantiate (they take no options)."""


def foreign_callback(callbacks: Any) -> str | None:
    """The sentence refusing the first entry of ``hydra.callbacks`` that is not one of
    ``ZORB_CALLBACKS`` without options (an option of a callback could itself name a
    ``_target_`` that Hydra would instantiate), else None."""
    for name, params in (callbacks or {}).items():
        params = OmegaConf.to_container(params, resolve=False) if isinstance(params, DictConfig) else params
        target = params.get("_target_") if isinstance(params, dict) else None
        if target not in ZORB_CALLBACKS or set(params) != {"_target_"}:
            return (f"hydra.callbacks.{name} asks Hydra to instantiate {target!r}"
                    f"{'' if target not in ZORB_CALLBACKS else ' with options'}, but zorb only runs its own "
                    f"callbacks ({', '.join(ZORB_CALLBACKS)}, without options): remove it")
    return None


def refuse_foreign_callbacks() -> None:
    """Make Hydra check ``hydra.callbacks`` (``foreign_callback``) before it instantiates any
    of them: a refused entry ends the command with its sentence and exit status 1 before
    anything runs. Hydra offers no hook ahead of that instantiation, so this wraps its
    ``Callbacks`` constructor (tests/test_runner_faults.py fails if Hydra moves it)."""
    from hydra._internal.callbacks import Callbacks

    original = Callbacks.__init__
    if getattr(original, "zorb_checked", False):
        return

    def checked(self, config: DictConfig | None = None) -> None:
        refusal = foreign_callback(OmegaConf.select(config, "hydra.callbacks")) if config is not None else None
        if refusal:
            raise SystemExit(refusal)
        original(self, config)

    checked.zorb_checked = True
    Callbacks.__init__ = checked


class DataCheckCallback(Callback):
    """Hydra callback: before a multirun whose jobs all read one image dataset, check its files.

    Hydra turns a callback's exceptions into warnings and goes on, so a missing file ends the
    command here (``SystemExit``: the sentence on stderr, exit status 1) before any job or
    MLflow run starts.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from zorb.data.images import IMAGE_DATASETS, MissingDataFiles, check_image_files

        swept = swept_keys(config)
        name = OmegaConf.select(config, "dataset.name")
        if swept is None or swept & set(DATA_KEYS) or name not in IMAGE_DATASETS or \
                OmegaConf.select(config, "dataset.download"):
            return
        try:
            check_image_files(name, Path(str(config.data_dir)).expanduser())
        except MissingDataFiles as error:
            raise SystemExit(f"{error} (no job was started)") from None


_PARENT_HEARTBEATS: list = []


class MLflowSweepCallback(Callback):
    """Hydra callback: opens the multirun's MLflow parent run and guarantees it is closed.

    Before any job starts it checks the store once (one sentence and exit status 1 when it
    cannot be written) and reaps the runs of this host in the experiment whose process is
    gone (``zorb.runner.lifecycle.reap``). The parent run carries the launching process's
    tags and heartbeat, so that it is reaped in turn if that process is killed.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from zorb.errors import ZorbError
        from zorb.runner import lifecycle, store

        if not OmegaConf.select(config, "tracking.enabled", default=False):
            return
        state = SweepState(sweep_dir_of(config.hydra))
        uri = store.resolve(OmegaConf.select(config, "tracking.uri"))
        try:
            store.check(uri, write=True)
        except ZorbError as error:
            raise SystemExit(f"{error} (no job was started)") from None
        experiment = str(config.tracking.experiment)
        opened = state.open_parent(tracking_uri=uri, experiment=experiment, expected_jobs=count_jobs(config),
                                   tags={**sweep_tags(config), **lifecycle.process_tags()}, fresh=True)
        client = tracking.client(uri)
        lifecycle.reap(client, [opened["experiment_id"]], this_host_only=True)
        # kept off the callback: Hydra's joblib launcher pickles the callbacks for its workers
        _PARENT_HEARTBEATS.append(lifecycle.Heartbeat(tracking.RunRecorder(client, opened["parent_run_id"])))
        # Hydra skips on_multirun_end when a job failed; closing at exit covers that case.
        atexit.register(_close_at_exit, state)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        status = FINISHED if job_return.status == JobStatus.COMPLETED else FAILED
        SweepState(sweep_dir_of(config.hydra)).record_job(int(config.hydra.job.num), status)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        state = SweepState(sweep_dir_of(config.hydra))
        state.close()
        opened = state.read()
        if opened is None:
            return
        from zorb.runner.sweeps import log_sweep_summary

        try:  # the sweep's table and figure on its parent run (python scripts/tables.py --sweep latest redoes them)
            log_sweep_summary(opened["tracking_uri"], opened["parent_run_id"])
        except Exception as error:  # the runs are recorded; a summary that fails must not fail the sweep
            log.error("could not log the sweep's table and figure on parent run %s: %s",
                      opened["parent_run_id"], error)


def _close_at_exit(state: SweepState) -> None:
    try:
        status = state.close()
        if status is not None:
            log.debug("sweep %s closed %s", state.folder, status)
    except Exception as error:  # at exit, a failure to reach the store must not mask the real exit status
        log.error("could not close the MLflow parent run of %s: %s", state.folder, error)
