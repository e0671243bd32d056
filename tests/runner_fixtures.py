"""Fixtures and helpers for the runner tests: a throw-away MLflow store per test, the
composed Hydra config, and the real CLI in a subprocess.

A fresh SQLite store takes seconds to create (MLflow's migrations), so one template is
made per session and copied for each test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
RUN_PY = ROOT / "run.py"


@pytest.fixture(scope="session")
def template_store(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite database."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template_store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, template_store) -> str:
    """``sqlite:///`` URI of a fresh store for this test (artifacts go beside it)."""
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(template_store, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def compose(*overrides: str):
    """The config ``python run.py <overrides>`` would run (without Hydra's own section)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from zorb.runner import experiments

    experiments.register()  # as run.py does: experiments/*.yaml are the `experiment` group
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no inherited store, Hydra's short errors."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``python run.py <args>`` in ``cwd`` (where Hydra puts outputs/ and multirun/)."""
    return subprocess.run([sys.executable, str(RUN_PY), *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str = "zorb") -> list:
    """All runs of ``experiment`` in the store, oldest first."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = mlflow_client.search_runs([found.experiment_id], max_results=1000)
    return sorted(runs, key=lambda r: r.info.start_time)


def logged_network(uri: str, run_id: str, folder):
    """The network inside a run's MLflow model (``runs:/<id>/model``: zorb's .npz under data/)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    import zorb

    with _use_tracking_uri(uri):  # the store runs:/ URIs are read from, restored after
        local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(folder))
    return zorb.load(f"{local}/data/model.npz")
