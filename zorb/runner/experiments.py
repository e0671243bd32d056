"""The paper's experiments as Hydra's ``experiment`` config group.

One file per paper table lives in ``experiments/`` at the repository root (a
``# @package _global_`` config diff with its sweep in ``hydra.sweeper.params``), so that

    python run.py -m experiment=paper_a

runs a whole table. Hydra finds a group's options in a folder named after the group on its
search path, and a relative ``file://`` search path would depend on the directory a command
starts in; instead ``register()`` stores every ``experiments/*.yaml`` in Hydra's ConfigStore
as ``experiment/<file stem>``, in the package its ``# @package`` header names. ``run.py``
calls it before Hydra composes anything; the ConfigStore travels to joblib and submitit
workers with Hydra's singleton state, so workers compose the same jobs.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
GROUP = "experiment"
_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)\s*$")


def package_of(text: str) -> str | None:
    """The package a ``# @package <name>`` line in the file's leading comments names, else None."""
    for line in text.splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        found = _PACKAGE_HEADER.match(line)
        if found:
            return found.group(1)
    return None


def register(directory: Path | None = None) -> list[str]:
    """Store every ``<directory>/*.yaml`` as option ``experiment/<stem>``; returns the names.

    Registering again replaces the stored options (idempotent).
    """
    from hydra.core.config_store import ConfigStore

    directory = Path(directory or EXPERIMENTS_DIR)
    store = ConfigStore.instance()
    names = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text()
        store.store(name=path.stem, node=OmegaConf.create(text), group=GROUP,
                    package=package_of(text) or "_global_", provider="zorb experiments")
        names.append(path.stem)
    return names
