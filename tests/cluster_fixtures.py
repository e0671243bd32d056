"""A one-node SLURM cluster and an MLflow tracking server, started inside the tests.

Nothing is installed here (``.ci/run`` installs Debian's ``slurmctld slurmd slurmdbd munge
mariadb-server`` where they are missing). ``slurm_cluster`` writes a minimal ``slurm.conf``
(one node with this machine's cores and most of its memory, no cgroup plugins) into a
temporary folder, starts ``munged``, ``mariadbd`` and ``slurmdbd`` (the accounting that
``sacct``, and so submitit, reads job states from), ``slurmctld`` and ``slurmd`` in the
foreground as child processes, waits until ``sinfo`` shows the node idle, and stops them by
their process ids afterwards. Every daemon talks through its own ports and sockets in that
folder, so nothing of the machine's own configuration is used or changed. SLURM's client
commands find the cluster through ``SLURM_CONF`` (``Cluster.env``).

``mlflow_server`` starts ``mlflow server`` on 127.0.0.1 at a free port with a SQLite store
and an artifact folder in the temporary folder.

Without the packages (or not as root) the tests are skipped with the reason; in CI
(``CI=true``) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "mariadb-install-db")
CLUSTER_NAME = "zorbtest"
NODE = "zorbnode"


def missing_reason() -> str | None:
    """Why the cluster cannot start here, or None."""
    absent = [name for name in DAEMONS if shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin")
              is None]
    if absent:
        return (f"SLURM test cluster needs {', '.join(absent)} "
                "(apt-get install slurmctld slurmd slurmdbd munge mariadb-server; .ci/run does)")
    if os.geteuid() != 0:
        return "SLURM test cluster runs its daemons as root"
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the cluster tests must run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin") or name


@dataclass
class Cluster:
    """A running test cluster: its folder, the ``SLURM_CONF`` clients need, its daemons."""

    folder: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that uses the cluster's client commands."""
        path = os.environ.get("PATH", "")
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{path}:/usr/sbin"}

    def command(self, *args: str, timeout: float = 30) -> str:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self, name: str, *args: str, log: str | None = None) -> subprocess.Popen:
        out = open(self.folder / (log or f"{name}.out"), "ab")
        process = subprocess.Popen([_which(name), *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=self.folder, start_new_session=True)
        self.processes[name] = process
        return process

    def alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(self.folder.glob("*.log"))
                             if name.rstrip("d") in p.name or p.stem == name)
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{logs}")

    def stop(self) -> None:
        """Cancel what is still queued, then SIGTERM to each daemon (the last started first),
        SIGKILL after 20 s."""
        ctld = self.processes.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                jobs = self.command("squeue", "-h", "-o", "%A").split()
                if jobs:
                    self.command("scancel", *jobs)
                    deadline = time.monotonic() + 30
                    while not self.queue_empty() and time.monotonic() < deadline:
                        time.sleep(1)
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                pass
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def wait_for(self, what: str, check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name in self.processes:
                self.alive(name)
            try:
                if check():
                    return
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster's {what} did not come up in {timeout:.0f} s")
            time.sleep(0.5)

    def queue_empty(self) -> bool:
        return self.command("squeue", "-h", "-o", "%i").strip() == ""

    def wait_queue_empty(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.queue_empty():
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still queued after {timeout:.0f} s:\n{self.command('squeue')}")
            time.sleep(1)

    def accounting(self, job: str) -> dict[str, str]:
        """``sacct``'s state of each step of ``job`` (an array job id covers its tasks)."""
        out = self.command("sacct", "-n", "-P", "-X", "-j", job, "-o", "JobID,State")
        return dict(line.split("|", 1) for line in out.strip().splitlines() if line)


def _hardware() -> dict[str, str]:
    """This node's CPUs/sockets/cores/threads and memory as ``slurmd -C`` reports them."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    node = {key: fields[key] for key in keep if key in fields}
    # below what the machine has: slurmd drains a node that reports less than its configured memory
    node["RealMemory"] = str(max(256, int(int(fields.get("RealMemory", "2048")) * 0.8)))
    return node


def write_config(folder: Path) -> dict[str, int]:
    """slurm.conf and slurmdbd.conf in ``folder``; returns the ports chosen."""
    ports = {name: free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
    for sub in ("state", "spool", "mysql", "run"):
        (folder / sub).mkdir(exist_ok=True)
    auth = f"AuthType=auth/munge\nAuthInfo=socket={folder / 'run' / 'munge.socket'}\n"
    node = " ".join(f"{key}={value}" for key, value in _hardware().items())
    (folder / "slurm.conf").write_text(f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
{auth}CredType=cred/munge
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'run' / 'slurmctld.pid'}
SlurmdPidFile={folder / 'run' / 'slurmd.pid'}
SlurmctldLogFile={folder / 'slurmctld.log'}
SlurmdLogFile={folder / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
AccountingStoragePass={folder / 'run' / 'munge.socket'}
MailProg=/bin/true
JobCompType=jobcomp/none
KillWait=30
MinJobAge=600
InactiveLimit=0
SlurmctldParameters=enable_configless
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname=localhost {node} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    dbd = folder / "slurmdbd.conf"
    dbd.write_text(f"""\
{auth}DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
PidFile={folder / 'run' / 'slurmdbd.pid'}
LogFile={folder / 'slurmdbd.log'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadb']}
StorageUser=root
StorageLoc=slurm_acct_db
""")
    dbd.chmod(0o600)  # slurmdbd refuses a config others can read
    return ports


def start_cluster(cluster: Cluster) -> None:
    """Start the daemons of ``cluster`` (each one joins ``cluster.processes`` as it starts, so
    ``cluster.stop()`` ends those started even when a later one fails)."""
    folder = cluster.folder
    folder.chmod(0o755)
    ports = write_config(folder)
    key = folder / "munge.key"
    subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
    key.chmod(0o600)
    run = folder / "run"
    cluster.start("munged", "--foreground", "--force", f"--socket={run / 'munge.socket'}", f"--key-file={key}",
                  f"--pid-file={run / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
                  f"--seed-file={run / 'munged.seed'}", "--num-threads=10")
    cluster.wait_for("munge", lambda: (run / "munge.socket").exists(), timeout=30)
    # accounting: a private MariaDB on 127.0.0.1 without grant tables (no password to manage)
    subprocess.run([_which("mariadb-install-db"), f"--datadir={folder / 'mysql'}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, cwd=folder)
    cluster.start("mariadbd", "--no-defaults", f"--datadir={folder / 'mysql'}", "--user=root",
                  f"--socket={run / 'mysqld.sock'}", f"--pid-file={run / 'mysqld.pid'}", "--bind-address=127.0.0.1",
                  f"--port={ports['mariadb']}", "--skip-grant-tables", "--innodb-buffer-pool-size=32M",
                  log="mariadbd.log")

    def listening(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    cluster.wait_for("MariaDB", lambda: listening(ports["mariadb"]), timeout=60)
    cluster.start("slurmdbd", "-D")  # reads slurmdbd.conf beside SLURM_CONF
    cluster.wait_for("slurmdbd", lambda: listening(ports["slurmdbd"]), timeout=60)
    cluster.start("slurmctld", "-D", "-i", "-f", str(cluster.conf))
    cluster.wait_for("slurmctld", lambda: bool(cluster.command("sinfo", "-h")), timeout=60)
    cluster.start("slurmd", "-D", "-N", NODE, "-f", str(cluster.conf))
    cluster.wait_for("node", lambda: cluster.command("sinfo", "-h", "-N", "-o", "%T").strip() == "idle",
                     timeout=90)
    # the cluster registers itself with slurmdbd; sacct answers once that is done
    cluster.wait_for("accounting", lambda: CLUSTER_NAME in cluster.command("sacctmgr", "-n", "-P", "list",
                                                                             "cluster", "format=cluster"),
                     timeout=60)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node SLURM cluster (module-wide: starting one takes ~10 s)."""
    reason = missing_reason()
    if reason:
        skip_or_fail(reason)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        start_cluster(cluster)
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Server:
    uri: str
    store: Path
    artifacts: Path
    process: subprocess.Popen


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, template_store):
    """``mlflow server`` on 127.0.0.1 with its SQLite store and artifacts in a temporary folder."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    store, artifacts = folder / "mlflow.db", folder / "mlartifacts"
    shutil.copy(template_store, store)  # migrated already: the server starts in seconds
    port = free_port()
    log = open(folder / "server.log", "ab")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
                                "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
                                "--port", str(port), "--workers", "1"],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # minutes on a loaded machine, seconds on an idle one
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{(folder / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer in 300 s")
            time.sleep(0.5)
        yield Server(uri, store, artifacts, process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
