"""A single run's MLflow writes, made by a second process that opens the store while the run
starts.

Importing MLflow and opening a SQLite store take ~2-2.5 s of Python (SQLAlchemy's models,
Alembic's migrations), the same again to load its model and dataset modules: more than a
small run's imports, data, compilation and fit together, and all of it holds the GIL, so a
thread cannot overlap it. ``run.py`` therefore starts ``python -m zorb.runner.writer`` first
thing (``start``) for a single run; the writer imports MLflow on the other core while the run
imports JAX, composes its config, loads its data and compiles. The run's recorder
(``RemoteRecorder``, the interface of ``zorb.runner.tracking.RunRecorder``) sends it plain
data (JSON lines on a pipe; no pickle) and waits only where it needs an answer: a file to be
copied before its folder goes, the logged model's id, the run's end. The run's process never
imports MLflow.

The writer ignores SIGINT, SIGTERM and SIGHUP: the run's process handles them and ends its
run KILLED through the writer, as it does without one (``zorb.runner.lifecycle``). When the
run's process is gone without ending its run (SIGKILL, a crash), the writer reads the end of
its pipe and ends the run KILLED, naming the cause.

A sweep does not use one: its jobs share one store client per process (``tracking.client``),
opened once. ``ZORB_WRITER_PROCESS=0`` turns the writer off; the run then writes itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from zorb.runner.tracking import Records

log = logging.getLogger("zorb.runner.writer")

ENV_SWITCH = "ZORB_WRITER_PROCESS"
PIPE_BYTES = 1 << 20
CLOSE_SECONDS = 60.0
"""How long the run's process waits at its exit for the writer's last writes."""
NOT_SINGLE_RUN = ("-m", "--multirun", "-c", "--cfg", "--help", "-h", "--hydra-help", "--info", "-i", "--run",
                  "-r", "--shell-completion", "-sc", "--version")
"""``run.py`` arguments that run no single tracked run (a sweep, Hydra's own commands)."""
UNTRACKED = ("tracking=off", "tracking.enabled=false", "tracking.enabled=False")
LOST = "the run's process ended without ending its run (killed by SIGKILL, or crashed)"
# what a RemoteRecorder may call on the writer's RunRecorder
METHODS = ("log_params", "set_tags", "log_metrics", "log_points", "log_datasets", "log_network", "log_spectra",
           "log_file", "log_dir", "log_text", "terminate", "artifact_uri")


class WriterError(RuntimeError):
    """The writer process failed a write, or is gone."""


# --------------------------------------------------------------------------- the run's side


def rebuilt_error(reply: Mapping[str, Any]) -> Exception:
    """A failed request's error in the run's process: zorb's own errors (one sentence for the
    user, e.g. a deleted experiment's ``ConfigError``) as their own class, others as
    ``WriterError``."""
    if reply.get("zorb"):
        import zorb.errors

        kind = getattr(zorb.errors, str(reply.get("type")), None)
        if isinstance(kind, type) and issubclass(kind, zorb.errors.ZorbError):
            return kind(reply["error"])
    return WriterError(f"the MLflow writer process failed: {reply.get('type')}: {reply['error']}")


class WriterProcess:
    """The writer process and its two pipes; replies are read by a thread into futures."""

    def __init__(self) -> None:
        requests_read, self._requests_fd = os.pipe()
        self._replies_fd, replies_write = os.pipe()
        env = dict(os.environ)
        # zorb importable from wherever it lies (a checkout run without installing it)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(Path(__file__).resolve().parents[2]),
                                                          env.get("PYTHONPATH"))))
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zorb.runner.writer", str(requests_read), str(replies_write)],
                pass_fds=(requests_read, replies_write), stdin=subprocess.DEVNULL, env=env)
        finally:
            os.close(requests_read)
            os.close(replies_write)
        try:  # room for a run's first requests while the writer still imports MLflow
            import fcntl

            fcntl.fcntl(self._requests_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        except OSError:
            pass
        self._requests = os.fdopen(self._requests_fd, "w", encoding="utf-8")
        self._lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._count = 0
        self.used = False
        self.error: Exception | None = None
        self._gone = False
        self._reader = threading.Thread(target=self._read, name="zorb-writer-replies", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            self._read_replies()
        except Exception as error:  # a reply that is not JSON: nothing later can be trusted
            self.error = self.error or WriterError(f"the MLflow writer process answered nonsense: {error}")
            self.process.kill()
        code = self.process.wait()
        gone = WriterError(f"the MLflow writer process ended (exit status {code}) before answering")
        self.error = self.error or gone
        self._gone = True
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(gone)

    def _read_replies(self) -> None:
        with os.fdopen(self._replies_fd, "r", encoding="utf-8") as replies:
            for line in replies:
                reply = json.loads(line)
                with self._lock:
                    future = self._pending.pop(reply["id"])
                if "error" in reply:
                    error = rebuilt_error(reply)
                    if self.error is None:
                        self.error = error
                    future.set_exception(error)
                else:
                    future.set_result(reply.get("result"))

    def take_error(self) -> Exception | None:
        """The first failed request's error, once: a run stopped by it can still be closed
        through the writer (unless the writer is gone)."""
        error = self.error
        if error is not None and not self._gone:
            self.error = None
        return error

    def send(self, op: str, check: bool = True, **payload: Any) -> Future:
        """Send one request; its future holds the writer's answer. An earlier request's
        failure is raised here, at the next request after it (unless not ``check``)."""
        error = self.take_error() if check else None
        if error is not None:
            raise error
        future: Future = Future()
        with self._lock:
            self._count += 1
            number = self._count
            self._pending[number] = future
            try:
                self._requests.write(json.dumps({"id": number, "op": op, **payload}) + "\n")
                self._requests.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._pending.pop(number, None)
                raise self.error or WriterError("the MLflow writer process is gone") from None
        return future

    def open_run(self, uri: str, experiment: str, run_name: str, tags: Mapping[str, str]) -> "RemoteRecorder":
        """Open a run in experiment ``experiment`` (created if missing) of store ``uri``."""
        self.used = True
        opened = self.send("open", uri=uri, experiment=experiment, run_name=run_name, cwd=os.getcwd(),
                           tags={key: str(value) for key, value in tags.items()})
        return RemoteRecorder(self, opened)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """End the requests; wait for the writer's last writes (``timeout`` seconds at most).
        A writer that no run used is stopped at once."""
        if not self.used and self.process.poll() is None:
            self.process.kill()
        try:
            self._requests.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.error("the MLflow writer process has not finished its writes after %.0f s: stopping it", timeout)
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5.0)


class RemoteRecorder(Records):
    """``zorb.runner.tracking.RunRecorder``'s interface over a ``WriterProcess``: writes are
    sent without waiting; copying files, the model and the run's end wait for the writer."""

    def __init__(self, writer: WriterProcess, opened: Future):
        self.writer = writer
        self._opened = opened

    @property
    def run_id(self) -> str:
        return self._opened.result()["run_id"]

    @property
    def experiment_id(self) -> str:
        return self._opened.result()["experiment_id"]

    def ready(self) -> None:
        """Wait until the run is open: its store and experiment turned out usable (or the
        reason they are not raised, e.g. a deleted experiment's ``ConfigError``)."""
        self._opened.result()

    def when_open(self, callback) -> None:
        """``callback(run_id, experiment_id)`` once the run is open (in the replies' thread)."""
        def opened(future: Future) -> None:
            if future.exception() is None:
                callback(future.result()["run_id"], future.result()["experiment_id"])

        self._opened.add_done_callback(opened)

    def _failed_to_open(self) -> bool:
        return self._opened.done() and self._opened.exception() is not None

    def _call(self, method: str, *args: Any, wait: bool = False, check: bool = True) -> Any:
        if self._failed_to_open():
            error = self.writer.take_error() if check else None
            if error is not None:
                raise error
            return None  # no run to write to, nor to close
        future = self.writer.send("call", check=check, method=method, args=list(args))
        return future.result() if wait else None

    def log_params(self, params: Mapping[str, str]) -> None:
        self._call("log_params", {str(key): str(value) for key, value in params.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call("set_tags", {str(key): str(value) for key, value in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, model_id: str | None = None) -> None:
        self._call("log_metrics", {str(key): float(value) for key, value in metrics.items()}, int(step), model_id)

    def log_points(self, points: list[tuple[str, float, int]], model_id: str | None = None) -> None:
        self._call("log_points", [[str(key), float(value), int(step)] for key, value, step in points], model_id)

    def log_datasets(self, specs: list[Mapping[str, Any]]) -> None:
        self._call("log_datasets", list(specs))

    def log_network(self, network_file: str, dtype: str, input_shape: list[int], output_shape: list[int],
                    requirements: list[str], name: str = "model") -> str:
        return self._call("log_network", network_file, dtype, list(input_shape), list(output_shape),
                          list(requirements), name, wait=True)

    def log_spectra(self, folder: Path | str, title: str) -> None:
        """The writer draws the figures (the run's process need not load matplotlib)."""
        self._call("log_spectra", str(folder), title, wait=True)

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        self._call("log_file", str(path), artifact_path, wait=True)  # the file may go once this returns

    def log_dir(self, path: Path, artifact_path: str | None = None) -> None:
        self._call("log_dir", str(path), artifact_path, wait=True)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call("log_text", text, artifact_file)

    def terminate(self, status: str) -> None:
        """End the run ``status`` once every write before it is in the store. A write that
        failed meanwhile ends it FAILED instead of FINISHED, with its error, which is then
        raised."""
        if self._failed_to_open():
            return
        try:
            self.writer.send("sync", check=False).result()
        except WriterError:
            pass
        error = self.writer.take_error()
        if error is not None and status == "FINISHED":
            self._call("set_tags", {"error": str(error)}, check=False)
            status = "FAILED"
        self._call("terminate", status, wait=True, check=False)
        if error is not None:
            raise error

    @property
    def artifact_uri(self) -> str:
        return self._call("artifact_uri", wait=True)


_process: WriterProcess | None = None


def wanted(argv: list[str]) -> bool:
    """Whether ``run.py <argv>`` runs one run that may be tracked (not a sweep, not one of
    Hydra's own commands, not ``tracking=off``) and the writer is not switched off."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return not any(arg in NOT_SINGLE_RUN or arg.startswith(("--cfg=", "--multirun=")) or arg in UNTRACKED
                   for arg in argv)


def start(argv: list[str]) -> None:
    """Start the writer process for ``run.py <argv>`` when ``wanted``; it is stopped at exit."""
    global _process
    if _process is not None or not wanted(argv):
        return
    import atexit

    try:
        _process = WriterProcess()
    except OSError as error:  # the run writes itself
        log.debug("no writer process: %s", error)
        return
    atexit.register(_process.close)


def take() -> WriterProcess | None:
    """The writer process, for this process's one run; None if there is none, or if a run
    has taken it already (a later run writes itself)."""
    if _process is None or _process.used or _process.error is not None or _process.process.poll() is not None:
        return None
    return _process


# --------------------------------------------------------------------------- the writer's side


def serve(requests_fd: int, replies_fd: int) -> None:
    """Answer a run's requests until its pipe ends, then end any run it left open KILLED."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from zorb.errors import ZorbError
    from zorb.runner import tracking

    tracking.import_store()  # before the first request: the run goes on meanwhile
    replies = os.fdopen(replies_fd, "w", encoding="utf-8")
    recorder = None
    ended = False
    with os.fdopen(requests_fd, "r", encoding="utf-8") as requests:
        for line in requests:
            try:
                request = json.loads(line)
            except ValueError:  # the run's process died mid-line
                break
            try:
                if request["op"] == "open":
                    os.chdir(request["cwd"])  # the run's folder (hydra.job.chdir=true): relative paths as it reads them
                    recorder = tracking.open_run(request["uri"], request["experiment"], run_name=request["run_name"],
                                                 tags=request["tags"])
                    result = {"run_id": recorder.run_id, "experiment_id": recorder.experiment_id}
                    # then, in a thread, what the run's end needs (MLflow's model modules, the
                    # figures): started earlier, it would slow the opening the run waits for
                    tracking.warm_up()
                elif request["op"] == "sync":
                    result = None
                elif request["op"] == "call" and request["method"] in METHODS and recorder is not None:
                    found = getattr(recorder, request["method"])
                    result = found(*request["args"]) if callable(found) else found  # artifact_uri: a property
                    ended = ended or request["method"] == "terminate"
                else:
                    raise ValueError(f"unknown request {request.get('op')!r} {request.get('method')!r}")
                reply = {"id": request["id"], "result": result}
            except Exception as error:
                reply = {"id": request["id"], "error": str(error), "type": type(error).__name__,
                         "zorb": isinstance(error, ZorbError)}
            if replies is not None:
                try:
                    replies.write(json.dumps(reply) + "\n")
                    replies.flush()
                except OSError:  # the run's process is gone: its requests are still written
                    with contextlib.suppress(OSError):
                        replies.close()
                    replies = None
    if recorder is not None and not ended:
        from zorb.runner import lifecycle

        try:
            recorder.set_tags({"error": LOST, lifecycle.REAPED: "closed KILLED by its MLflow writer process"})
        finally:
            recorder.terminate("KILLED")
    if replies is not None:
        with contextlib.suppress(OSError):
            replies.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
    logging.shutdown()
    os._exit(0)  # without the teardown of MLflow's and SQLAlchemy's objects
