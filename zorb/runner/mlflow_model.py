"""A trained zorb network as an MLflow model: the ``pyfunc`` flavour's loader module.

Each run logs its network as ``runs:/<run id>/model`` (``zorb.runner.records``): zorb's own
``.npz`` (``zorb.save``: arrays and a JSON header, no pickle) under the model's ``data/``, and
this module named as the loader, so MLflow serialises no Python object either. With zorb
installed,

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    model.predict(X)          # X: (N, *input_shape) -> (N, *output_shape), = zorb.predict
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ARTIFACT_PATH = "model"
NETWORK_FILE = "model.npz"
BATCH_ROWS = 1000


class ZorbPyfuncModel:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict`` runs ``zorb.predict``."""

    def __init__(self, network):
        self.network = network

    def predict(self, model_input, params=None) -> np.ndarray:
        """``model_input`` (N, *input_shape), an array or a DataFrame of N rows, evaluated
        ``BATCH_ROWS`` rows at a time (as the runner's ``eval_batch_size``)."""
        import zorb

        return zorb.predict(self.network, np.asarray(model_input), batch_size=BATCH_ROWS)


def _load_pyfunc(data_path: str) -> ZorbPyfuncModel:
    """MLflow's entry point: ``data_path`` is the model's copy of the ``.npz`` (or its folder)."""
    import zorb

    path = Path(data_path)
    return ZorbPyfuncModel(zorb.load(path / NETWORK_FILE if path.is_dir() else path))
