"""zorb's sweeper (``hydra/sweeper=zorb``, the default in conf/config.yaml): Hydra's basic
sweeper that composes one job of each shape instead of every job, both to check the batch
before launching and to run it.

Two jobs that choose the same option of every config group and set the same keys compose
the same way, whatever values they give those keys (zorb's configs have no typed schema
outside ``hydra.*``, and Hydra's defaults lists may only interpolate group choices), so one
of them stands for both: paper_a's 350 jobs (5 datasets x 7 methods x 10 seeds) are 35
shapes. A group choice, a key under ``hydra.`` (typed by Hydra's schemas), or a deletion is
compared whole; a value override (``seed=3``, ``solver.rcond=1e-9``) by its key.

- **The check before launching** (``validate_batch_is_legal``) composes one job of each shape:
  paper_a checks as 35 compositions instead of 350.
- **Each job's config** comes from ``ShapeCachingLoader``, which the launcher receives in
  place of Hydra's loader: the first job of a shape in a process is composed by Hydra and
  kept; a later one of that shape is a copy of it with the job's own values set, its
  ``hydra.overrides.task``, ``hydra.job.override_dirname`` and ``hydra.runtime.cwd``
  rewritten, as composition would have made them (a copy takes 9 ms, a composition of
  paper_a's config 140 ms). A job whose value overrides hold a list or a dict (which Hydra
  merges into the composed value) is composed whole. The cache lives in each process that
  runs jobs (the sweep's own, each joblib worker), for one sweep.

``hydra/sweeper=basic`` composes every job twice, as Hydra does by default. The module lives
in the ``hydra_plugins`` namespace because Hydra instantiates a sweeper only from there.
"""

import copy
import dataclasses
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf


@dataclass
class ZorbBasicSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.zorb_sweeper.zorb_sweeper.ZorbBasicSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="zorb", node=ZorbBasicSweeperConf, provider="zorb")


def job_shape(overrides: Sequence[str], groups: frozenset[str]) -> tuple[str, ...]:
    """What decides how a job's overrides compose: group choices, ``hydra.*`` settings and
    deletions whole, a value override by its key alone."""
    shape = []
    for override in overrides:
        key, sep, _ = override.partition("=")
        name = key.lstrip("+~")
        grouped = "/" in name or "@" in name or name in groups  # only a group takes a path or a package
        if not sep or key.startswith("~") or grouped or name.startswith("hydra."):
            shape.append(override)
        else:
            shape.append(key)
    return tuple(shape)


# Hydra's plugin scan executes this module again, in the same module object, each time it
# runs: once per process, and once per job in a joblib worker (Singleton.set_state). The cache
# is kept across those executions.
_COMPOSED: dict[tuple[str, tuple[str, ...]], DictConfig] = globals().get("_COMPOSED", {})
"""This process's composed config of each job shape, keyed by ``(sweep token, shape)``; only
the latest sweep's are kept."""


class ShapeCachingLoader(ConfigLoader):
    """Hydra's config loader (``delegate``) whose ``load_sweep_config`` composes one job of each
    ``job_shape`` in a process and copies it for the others (module docstring). Picklable: a
    joblib worker or a SLURM job gets the loader and the sweep's token, and fills its own cache."""

    def __init__(self, delegate: ConfigLoader, groups: frozenset[str]) -> None:
        self.delegate = delegate
        self.groups = groups
        self.token = uuid.uuid4().hex

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        overrides = list(sweep_overrides)
        shape = job_shape(overrides, self.groups)
        parsed = OverridesParser.create().parse_overrides(overrides=overrides)
        values = [override for override, text, part in zip(parsed, overrides, shape) if text != part]
        if any(isinstance(override.value(), (list, dict)) for override in values):
            return self.delegate.load_sweep_config(master_config, overrides)
        key = (self.token, shape)
        composed = _COMPOSED.get(key)
        if composed is None:
            config = self.delegate.load_sweep_config(master_config, overrides)
            if any(token != self.token for token, _ in _COMPOSED):
                _COMPOSED.clear()
            _COMPOSED[key] = copy.deepcopy(config)
            return config
        return _retarget(composed, master_config, parsed, values)

    def load_configuration(self, config_name: str | None, overrides: list[str], run_mode: RunMode,
                           from_shell: bool = True, validate_sweep_overrides: bool = True) -> DictConfig:
        return self.delegate.load_configuration(config_name, overrides, run_mode, from_shell=from_shell,
                                                validate_sweep_overrides=validate_sweep_overrides)

    def get_search_path(self):
        return self.delegate.get_search_path()

    def get_sources(self):
        return self.delegate.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.delegate.list_groups(parent_name)

    def get_group_options(self, group_name: str, results_filter: ObjectType | None = ObjectType.CONFIG,
                          config_name: str | None = None, overrides: list[str] | None = None) -> list[str]:
        return self.delegate.get_group_options(group_name, results_filter, config_name, overrides)

    def compute_defaults_list(self, config_name: str | None, overrides: list[str], run_mode: RunMode) -> Any:
        return self.delegate.compute_defaults_list(config_name, overrides, run_mode)


def _retarget(composed: DictConfig, master_config: DictConfig, parsed: list, values: list) -> DictConfig:
    """``composed`` (a job of the same shape) as the composition of the job's ``parsed``
    overrides makes it: its value overrides (``values``, a part of ``parsed``) set (an append,
    ``+key``, replaces the value its twin appended), and the records Hydra keeps of the job's
    overrides rewritten."""
    config = copy.deepcopy(composed)
    ConfigLoaderImpl._apply_overrides_to_config(
        [dataclasses.replace(v, type=OverrideType.FORCE_ADD) if v.is_add() else v for v in values], config)
    task = [override for override in parsed if not override.is_hydra_override()]
    hydra = config.hydra
    hydra.overrides.task = [override.input_line for override in task]
    dirname = hydra.job.config.override_dirname
    hydra.job.override_dirname = get_overrides_dirname(overrides=task, kv_sep=dirname.kv_sep,
                                                       item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
    hydra.runtime.cwd = os.getcwd()
    OmegaConf.copy_cache(from_config=master_config, to_config=config)
    return config


class ZorbBasicSweeper(BasicSweeper):
    """``BasicSweeper`` that checks and composes one job per ``job_shape``."""

    def setup(self, *, hydra_context: HydraContext, task_function, config: DictConfig) -> None:
        loader = hydra_context.config_loader
        caching = ShapeCachingLoader(loader, frozenset(loader.list_groups("")))
        super().setup(hydra_context=HydraContext(config_loader=caching, callbacks=hydra_context.callbacks),
                      task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        loader = self.hydra_context.config_loader if getattr(self, "hydra_context", None) else self.config_loader
        groups = frozenset(loader.list_groups(""))
        shapes: dict[tuple[str, ...], Sequence[str]] = {}
        for overrides in batch:
            shapes.setdefault(job_shape(overrides, groups), overrides)
        super().validate_batch_is_legal(list(shapes.values()))
