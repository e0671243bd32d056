"""zorb's sweeper (``hydra/sweeper=zorb``, the default in conf/config.yaml): Hydra's basic
sweeper, whose check that every job of a batch composes before any is launched composes one
job per distinct shape of job instead of every job.

The basic sweeper composes each job's config once to check it (``validate_batch_is_legal``)
and the launcher composes it again to run it: for ``experiment=paper_a``'s 350 jobs, 0.16 s
each, about a minute before the first job starts. Two jobs that choose the same option of
every config group and set the same keys compose the same way, whatever values they give
those keys (zorb's configs have no typed schema outside ``hydra.*``), so one of them stands
for both: paper_a's 350 jobs (5 datasets x 7 methods x 10 seeds) check as 35. A group choice,
a key under ``hydra.`` (typed by Hydra's schemas), or a deletion is compared whole; a value
override (``seed=3``, ``solver.rcond=1e-9``) by its key. ``hydra/sweeper=basic`` checks every
job, as Hydra does by default.

It lives in the ``hydra_plugins`` namespace because Hydra instantiates a sweeper only from
there.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore


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


class ZorbBasicSweeper(BasicSweeper):
    """``BasicSweeper`` checking one job per ``job_shape``."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        loader = self.hydra_context.config_loader if getattr(self, "hydra_context", None) else self.config_loader
        groups = frozenset(loader.list_groups(""))
        shapes: dict[tuple[str, ...], Sequence[str]] = {}
        for overrides in batch:
            shapes.setdefault(job_shape(overrides, groups), overrides)
        super().validate_batch_is_legal(list(shapes.values()))
