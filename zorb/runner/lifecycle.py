"""How a run's process ends, and how runs whose process died are closed.

- ``catch_signals()``: SIGTERM (``timeout``, ``docker stop``, SLURM's time limit, ``scancel``,
  preemption) and SIGHUP (a closed terminal) raise ``Stopped`` in the main thread, so the
  run's ``finally`` marks it KILLED like Ctrl-C does; ``exit_status`` is the shell's 128 +
  signal number. In a SLURM job started by submitit, also submitit's warning signal (SIGUSR2,
  ``hydra.launcher.signal_delay_s`` before the time limit, or on preemption): a zorb fit
  cannot resume from a checkpoint, so the job stops there instead of being requeued to start
  over. SLURM ends a job with SIGTERM, then SIGKILL ``KillWait`` seconds later: ``Stopped``
  unwinds the job in that time. The first signal is the one recorded; later ones (SLURM
  signals every process of the step and srun forwards its own) are ignored. A signal that
  arrives during a native call (one BLAS product) is handled when it returns; one whose
  ``Stopped`` (or ``KeyboardInterrupt``) lands where Python drops exceptions (a weakref
  callback) is raised again.
- ``process_tags()``: host, process id and the process's start time, so that a run left
  RUNNING by kill -9 or the OOM killer can be told from a live one; ``Heartbeat`` refreshes
  ``zorb.heartbeat`` (seconds since the epoch) so that runs of other hosts can be judged too.
- ``reap()``: marks RUNNING runs whose process is gone KILLED (same host: the pid is dead or
  belongs to a newer process) and other hosts' runs whose heartbeat is older than
  ``timeout`` FAILED. ``python scripts/runs.py reap`` calls it; so does every sweep's start.
- ``watch_parent()``: a sweep's worker process stops its job when the process that launched
  the sweep is gone (kill -9 of the launcher leaves the workers orphaned otherwise), and
  exits by force, with its threads' stacks on stderr, when the job does not stop in time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

HOST, PID, PROCESS_START, HEARTBEAT = "zorb.host", "zorb.pid", "zorb.process_start", "zorb.heartbeat"
STOPPED_BY, REAPED = "zorb.stopped_by", "zorb.reaped"
HEARTBEAT_SECONDS = 60.0
"""How often a run refreshes its heartbeat tag (one small store write)."""
STALE_SECONDS = 15 * 60.0
"""A run of another host whose heartbeat is older than this is taken for dead by ``reap``."""
PARENT_POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 10.0
"""How long a sweep's worker whose launcher is gone has to end its run before it exits."""
_watched: int | None = None  # the launcher this worker process watches (one thread per process)


class Stopped(BaseException):
    """The process received SIGTERM or SIGHUP (a BaseException, as KeyboardInterrupt is: no
    ``except Exception`` on the way up swallows it)."""

    def __init__(self, signum: int, reason: str | None = None):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(reason or describe(signum))

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def slurm_job() -> str | None:
    """``<job id>`` (``<array job id>_<task>`` for an array task) when running as a SLURM job."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def describe(signum: int) -> str:
    """The reason recorded for a run stopped by ``signum``."""
    name = signal.Signals(signum).name
    job = slurm_job()
    if job is None:
        return f"stopped by {name}"
    if signum == signal.SIGUSR2:
        return (f"stopped by {name}: SLURM job {job} reaches its time limit or is preempted "
                f"(submitit's warning signal)")
    return f"stopped by {name}: SLURM job {job} was cancelled, reached its time limit or was preempted"


def stop_reason(error: BaseException) -> str | None:
    """``"SIGTERM"``, ``"SIGHUP"`` or ``"SIGINT"`` when ``error`` means the run was stopped from
    outside (the run then ends KILLED), else None."""
    if isinstance(error, Stopped):
        return error.name
    if isinstance(error, KeyboardInterrupt):
        return "SIGINT"
    return None


def _raise_stopped(signum, frame) -> None:
    # the second copy of a signal must not interrupt the recording of the first
    for other in _signals():
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


def _raise_again(unraisable) -> None:
    """``sys.unraisablehook`` within ``catch_signals``: a ``Stopped`` (or Ctrl-C's
    ``KeyboardInterrupt``) raised where Python ignores exceptions (the handler runs at the
    main thread's next bytecode, which may be in a weakref callback or a ``__del__``:
    importlib's module locks have one) would leave the run going on as if no signal had
    come. It is sent again instead, to be raised where the main thread goes on."""
    error = unraisable.exc_value
    if isinstance(error, Stopped):
        signum = error.signum
        signal.signal(signum, _raise_stopped)
    elif isinstance(error, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signum = signal.SIGINT
    else:
        _previous_unraisablehook(unraisable)
        return
    log.debug("%s arrived in %r, which ignores exceptions: raising it again", signal.Signals(signum).name,
              unraisable.object)
    # from another thread: raised here, in the hook, it would be ignored again
    _after(0.01, os.kill, os.getpid(), signum)


def _after(seconds: float, call, *args) -> None:
    """``call(*args)`` in a daemon thread ``seconds`` from now (it never holds up an exit)."""
    timer = threading.Timer(seconds, call, args)
    timer.daemon = True
    timer.start()


_previous_unraisablehook = sys.unraisablehook


def _signals() -> tuple[int, ...]:
    stopping = (signal.SIGTERM, signal.SIGHUP)
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        stopping += (signal.SIGUSR2,)
    return stopping


@contextlib.contextmanager
def catch_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Stopped`` (main thread only; elsewhere a
    no-op); the previous handlers come back after it, so a sweep's worker process is again
    ended by them between jobs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a signal the process was started ignoring (SIGHUP under nohup) stays ignored
    global _previous_unraisablehook
    previous = {signum: signal.getsignal(signum) for signum in _signals()}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _raise_stopped)
    hook = sys.unraisablehook
    if hook is not _raise_again:
        _previous_unraisablehook = hook
        sys.unraisablehook = _raise_again
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = hook


def start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ValueError):
        return None


def process_tags() -> dict[str, str]:
    """``zorb.host``, ``zorb.pid``, ``zorb.process_start`` (seconds since the epoch) and a first
    ``zorb.heartbeat``."""
    return {HOST: socket.gethostname(), PID: str(os.getpid()),
            PROCESS_START: f"{start_time(os.getpid()):.2f}", HEARTBEAT: f"{time.time():.0f}"}


def process_alive(pid: int, started: float | None) -> bool:
    """Whether process ``pid`` of this host runs and is the one that started at ``started``
    (a pid reused by a newer process is not)."""
    now_started = start_time(pid)
    if now_started is None:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    return started is None or abs(now_started - started) < 1.0


class Heartbeat:
    """A daemon thread that sets ``zorb.heartbeat`` on a run every ``seconds``."""

    def __init__(self, recorder, seconds: float = HEARTBEAT_SECONDS):
        self.recorder, self.seconds = recorder, seconds
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="zorb-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.done.wait(self.seconds):
            try:
                self.recorder.set_tags({HEARTBEAT: f"{time.time():.0f}"})
            except Exception as error:  # a missed beat only makes the run look older to reap
                log.debug("heartbeat of %s failed: %s", self.recorder.run_id, error)

    def stop(self) -> None:
        self.done.set()


@dataclass(frozen=True)
class Verdict:
    run_id: str
    run_name: str
    status: str  # what reap sets: KILLED or FAILED
    reason: str


def judge(run, *, host: str, now: float, timeout: float) -> Verdict | None:
    """What ``reap`` does with one RUNNING run: None to leave it (alive, or carrying no
    process tags to tell)."""
    tags = run.data.tags
    if HOST not in tags or PID not in tags:
        return None
    name = run.info.run_name or run.info.run_id
    if tags[HOST] == host:
        started = float(tags[PROCESS_START]) if tags.get(PROCESS_START) else None
        if process_alive(int(tags[PID]), started):
            return None
        return Verdict(run.info.run_id, name, "KILLED", f"process {tags[PID]} on {host} is gone")
    beat = float(tags.get(HEARTBEAT) or run.info.start_time / 1000)
    if now - beat <= timeout:
        return None
    return Verdict(run.info.run_id, name, "FAILED",
                   f"stale: no heartbeat from {tags[HOST]} for {(now - beat) / 60:.0f} min")


def running_runs(client, experiment_ids: list[str]) -> Iterator:
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def reap(client, experiment_ids: list[str], *, dry_run: bool = False, timeout: float = STALE_SECONDS,
         this_host_only: bool = False) -> list[Verdict]:
    """Close the RUNNING runs of ``experiment_ids`` whose process is gone (see ``judge``);
    returns what was (or, with ``dry_run``, would be) done."""
    from zorb.runner.tracking import retrying

    host, now = socket.gethostname(), time.time()
    verdicts = []
    for run in running_runs(client, experiment_ids):
        verdict = judge(run, host=host, now=now, timeout=timeout)
        if verdict is None or (this_host_only and verdict.status != "KILLED"):
            continue
        verdicts.append(verdict)
        if not dry_run:
            retrying(client.set_tag, verdict.run_id, REAPED, verdict.reason)
            retrying(client.set_terminated, verdict.run_id, verdict.status)
            log.info("reaped MLflow run %s (%s): %s, %s", verdict.run_id, verdict.run_name, verdict.status,
                     verdict.reason)
    return verdicts


def watch_parent(launcher_pid: int, launcher_started: float | None) -> None:
    """In a sweep's worker process: when the launching process is gone, send this process
    SIGTERM, so the job's run ends KILLED and the worker exits instead of running on.

    A worker whose main thread has not ended the process ``STOP_GRACE_SECONDS`` later (a
    native call that does not return, a lock left held) writes every thread's stack to
    stderr and exits at once with SIGTERM's status; its run, left RUNNING, is closed KILLED by
    the next ``reap`` (every sweep's start, or ``python scripts/runs.py reap``)."""
    global _watched
    if launcher_pid == os.getpid() or _watched == launcher_pid:
        return
    _watched = launcher_pid

    def poll() -> None:
        while process_alive(launcher_pid, launcher_started):
            time.sleep(PARENT_POLL_SECONDS)
        # armed first: the log line below waits for logging's lock, which a stuck main
        # thread may hold
        _after(STOP_GRACE_SECONDS, force_exit, f"this job has not stopped {STOP_GRACE_SECONDS:.0f} s after SIGTERM")
        log.error("the sweep's launching process %d is gone: stopping this job", launcher_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=poll, name="zorb-parent-watch", daemon=True).start()


def force_exit(reason: str) -> None:
    """Write ``reason`` and every thread's stack to stderr and to the job's log files, then
    end the process at once with SIGTERM's exit status. It writes to the file descriptors
    directly, taking none of the locks (logging's, stderr's) that the stuck main thread may
    hold, and runs no cleanup."""
    import faulthandler

    try:
        targets = {2}
        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            with contextlib.suppress(Exception):
                targets.add(stream.fileno())
        for fd in sorted(targets):
            with contextlib.suppress(OSError):
                os.write(fd, f"zorb: {reason}; exiting now. The threads' stacks:\n".encode())
                faulthandler.dump_traceback(file=fd, all_threads=True)
    finally:
        os._exit(128 + signal.SIGTERM)


def run_then_exit(entry) -> None:
    """Call ``entry()`` (a command line's main), then end the process with its exit status
    without the interpreter's teardown.

    Tearing down a process that loaded JAX, XLA's CPU client and MLflow (every module's
    objects freed one by one, the client's thread pools stopped) takes 1.4-1.7 s on the
    project's 2-core machine: longer than a small run's fit. What an ordinary exit does that
    matters still happens, in the same order: other non-daemon threads are waited for, the
    ``atexit`` handlers run (``logging.shutdown`` flushes the job's log file among them),
    then stdout and stderr are flushed. An exception other than ``SystemExit`` propagates
    as usual, with its traceback and the usual exit.
    """
    import atexit

    try:
        entry()
        code = 0
    except SystemExit as stop:
        code = stop.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1, as Python does
        sys.stderr.write(f"{code}\n")
        code = 1
    # CPython's own exit path, in its order: threading's exit hooks (which tell the worker
    # threads of concurrent.futures and joblib's loky executor to stop), then the wait for
    # every non-daemon thread, then the atexit handlers
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
