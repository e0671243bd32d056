"""Whether the MLflow store can be used, found out in seconds before anything runs.

``check(uri, write=True)`` is what ``run.py`` does before a run (and a sweep once, before its
first job): an unsupported scheme, a tracking server that does not answer, or a store that
cannot be written is one ``ConfigError`` sentence. ``read_client(uri)`` opens a store for
reading only: it creates nothing (no lock file, no folder), so a store on a read-only mount
can be read by ``scripts/tables.py`` and ``scripts/runs.py reap --dry-run``.
"""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from zorb.errors import ConfigError
from zorb.runner import tracking

SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")
"""The tracking URI schemes MLflow opens (SQLAlchemy databases, a server, a folder)."""
PROBE_SECONDS = 4.0
"""How long a tracking server has to answer the one probe request."""
WHERE = "tracking.uri (or $MLFLOW_TRACKING_URI)"


def resolve(uri: str | None) -> str:
    """The store a run uses: ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the project's."""
    return tracking.resolve_tracking_uri(uri)


def scheme_of(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower()
    return "file" if scheme == "" else scheme.split("+", 1)[0]  # a plain path is a file store


def check(uri: str, *, write: bool) -> None:
    """ConfigError (one sentence naming ``uri``) unless the store can be read, and written when
    ``write``: the scheme is one of ``SCHEMES``; a server answers one request within
    ``PROBE_SECONDS``; a SQLite or file store's folder takes a new file."""
    scheme = scheme_of(uri)
    if scheme not in SCHEMES:
        raise ConfigError(f"{WHERE} is {uri!r}, whose scheme {scheme!r} MLflow cannot open: use "
                          f"sqlite:///<file>, http(s)://<host>:<port>, file:///<folder>, or a postgresql://, "
                          f"mysql://, mssql:// or databricks URI")
    if scheme in ("http", "https"):
        probe_server(uri)
        return
    path = tracking.sqlite_path(uri)
    if scheme == "file":
        path = Path(urlsplit(uri).path if uri.startswith("file:") else uri)
    if path is None:
        return  # a database server: MLflow's first request says what is wrong
    if not write:
        if not path.exists():
            raise ConfigError(f"there is no MLflow store at {path}: run an experiment first, or set "
                              f"{WHERE} to the store to read")
        return
    check_writable(path if scheme == "file" else path.parent, path)


def probe_server(uri: str) -> None:
    """One GET of the server's ``/health`` within ``PROBE_SECONDS``; any HTTP answer will do."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_SECONDS):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(f"the MLflow tracking server {uri} does not answer ({reason}): start it, or set "
                          f"{WHERE} to a running server or a sqlite:///<file> store (tracking=off records "
                          f"nothing)") from None


def check_writable(folder: Path, store: Path) -> None:
    """ConfigError unless ``folder`` exists or can be made, takes a new file, and ``store``
    (if it exists) opens for writing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        if store.is_file():
            with open(store, "r+b"):
                pass
    except OSError as error:
        raise ConfigError(f"cannot write the MLflow store {store} ({error.strerror or error}): set {WHERE} to "
                          f"a sqlite:///<file> in a writable folder, or run with tracking=off") from None


def read_client(uri: str):
    """An ``MlflowClient`` that reads ``uri`` and creates nothing beside it (after ``check``)."""
    from mlflow.tracking import MlflowClient

    check(uri, write=False)
    tracking._quiet_mlflow_loggers()
    return MlflowClient(tracking_uri=uri)


def writable(uri: str) -> bool:
    try:
        check(uri, write=True)
    except ConfigError:
        return False
    return True
