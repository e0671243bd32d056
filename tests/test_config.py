"""The Hydra config tree (conf/) and the runner's plumbing that needs no fit: groups,
shipped networks, public override keys, store resolution, param flattening, sweep
bookkeeping, thread pinning and the spectra figure."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from runner_fixtures import CONF, ROOT, compose, store, template_store  # noqa: F401

import zorb
from zorb.runner import callbacks as hydra_callbacks
from zorb.kernels import threads
from zorb.runner import tracking
from zorb.data import DATASETS

# Input shape and outputs of each dataset, to build every shipped network without data.
SHAPES = {
    "mnist": ((28, 28, 1), 10), "fashion_mnist": ((28, 28, 1), 10), "mnist_5k": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100), "digits": ((8, 8, 1), 10),
    "iris": ((4,), 3), "boston": ((13,), 1), "sinc": ((1,), 1), "sinc_symmetric": ((1,), 1), "xor": ((2,), 1),
    "two_spirals": ((2,), 1),
}
NETWORKS = ["conv_dense", "fashion_conv", "boston", "sinc", "iris", "xor", "two_spirals", "mnist_6", "mnist_8", "mnist_11",
            "conv1", "conv2", "conv3"]
# What PAPER_EXPERIMENTS.md fixes for each paper network: dataset, dense widths (hidden then
# output), activations in order, conv filters, and ZORB's rcond.
PAPER = {
    "boston": ("boston", [32, 1], ["sigmoid"], [], 1e-15),
    "sinc": ("sinc", [200, 200, 1], ["sigmoid", "sigmoid"], [], 1e-15),
    "iris": ("iris", [8, 3], ["sigmoid", "softmax"], [], 1e-15),
    "xor": ("xor", [16, 8, 1], ["tanh", "relu", "sigmoid"], [], 1e-15),
    "two_spirals": ("two_spirals", [32, 16, 8, 4, 1], ["tanh", "relu", "tanh", "relu", "sigmoid"], [], 1e-15),
    "mnist_6": ("mnist", [1000, 800, 600, 400, 200, 10], ["tanh"] * 5 + ["softmax"], [], 1e-15),
    "mnist_8": ("mnist", [1000, 850, 700, 550, 400, 250, 100, 10], ["tanh"] * 7 + ["softmax"], [], 1e-15),
    "mnist_11": ("mnist", [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100, 10], ["tanh"] * 10 + ["softmax"],
                 [], 1e-15),
    "conv1": ("cifar10", [10], ["sigmoid", "softmax"], [32], 1e-2),
    "conv2": ("cifar10", [10], ["sigmoid", "sigmoid", "softmax"], [32, 64], 1e-9),
    "conv3": ("cifar10", [10], ["sigmoid"] * 3 + ["softmax"], [32, 64, 128], 1e-9),
}


def options(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


def test_config_groups_exist():
    for group in ("dataset", "network", "solver", "tracking", "method", "hydra/launcher"):
        assert options(group), group
    assert options("solver") == {"svd", "qr", "gram"}
    assert {"zorb"} <= options("method")
    assert {"joblib", "submitit_slurm"} <= options("hydra/launcher")
    assert set(NETWORKS) <= options("network")


def test_every_dataset_has_a_config_and_a_default_network():
    assert options("dataset") == set(DATASETS)
    for name in DATASETS:
        cfg = compose(f"dataset={name}")
        assert cfg.dataset.name == name
        shape, outputs = SHAPES[name]
        specs = OmegaConf.to_container(cfg.network.layers)
        zorb.build_network(specs, shape, output_dim=outputs)


def test_default_config_is_the_offline_example():
    cfg = compose()
    assert cfg.dataset.name == "mnist_5k"
    assert cfg.network.name == "conv_dense"
    assert cfg.solver.name == "qr"
    assert cfg.method.name == "zorb"
    assert cfg.tracking.enabled and cfg.tracking.uri is None and cfg.tracking.experiment == "zorb"


@pytest.mark.parametrize("network", NETWORKS)
def test_shipped_network_builds_and_matches_the_paper(network):
    cfg = compose(f"network={network}")
    specs = OmegaConf.to_container(cfg.network.layers)
    assert all(isinstance(spec, dict) and "type" in spec for spec in specs)
    if network not in PAPER:
        net = zorb.build_network(specs, *SHAPES["mnist_5k"][:1], output_dim=10)
        assert net.parametric_indices
        return
    dataset, widths, activations, filters, rcond = PAPER[network]
    shape, outputs = SHAPES[dataset]
    net = zorb.build_network(specs, shape, output_dim=outputs)
    kinds = [layer.kind for layer in net.layers]
    assert [layer.weights.shape[1] for layer in net.layers if layer.kind == "dense"] == widths
    assert [layer.weights.shape[1] for layer in net.layers if layer.kind == "conv2d"] == filters
    assert [k for k in kinds if k in ("sigmoid", "tanh", "relu", "softmax")] == activations
    assert cfg.solver.rcond == rcond
    if filters:
        conv = [layer for layer in net.layers if layer.kind == "conv2d"]
        assert all(spec.get("kernel_size") == 3 for spec in specs if spec["type"] == "conv2d")
        assert all(layer.weights.shape[0] == 3 * 3 * layer.in_shape[-1] + 1 for layer in conv)


def test_public_keys_override():
    cfg = compose("dataset=iris", "network=iris", "solver.rcond=1e-9", "seed=3", "data_dir=scratch/d",
                  "solver.name=qr", "solver.u_rcond=1e-7", "solver.b_rcond=1e-5", "solver.ridge=0.5",
                  "tracking.uri=sqlite:///scratch/x.db", "tracking.experiment=exp")
    assert (cfg.dataset.name, cfg.network.name, cfg.seed, cfg.data_dir) == ("iris", "iris", 3, "scratch/d")
    assert (cfg.solver.name, cfg.solver.rcond, cfg.solver.u_rcond, cfg.solver.b_rcond, cfg.solver.ridge) == \
        ("qr", 1e-9, 1e-7, 1e-5, 0.5)
    assert (cfg.tracking.uri, cfg.tracking.experiment) == ("sqlite:///scratch/x.db", "exp")
    for solver in ("svd", "qr", "gram"):
        assert compose(f"solver={solver}").solver.name == solver


def test_rcond_follows_the_network_unless_given():
    assert compose("network=conv1").solver.rcond == 1e-2
    assert compose("network=conv2").solver.rcond == 1e-9
    assert compose("dataset=iris").solver.rcond == 1e-15
    assert compose("network=conv1", "solver.rcond=1e-5").solver.rcond == 1e-5
    assert compose("network=conv1", "solver=qr").solver.rcond == 1e-2
    # a network file without rcond leaves it to the dtype (zorb.default_rcond)
    assert compose("dataset=iris", "~network.rcond").solver.rcond is None  # zorb.default_rcond(dtype)


def test_dataset_picks_its_network_and_the_command_line_wins():
    assert compose("dataset=xor").network.name == "xor"
    assert compose("dataset=cifar10").network.name == "conv1"
    assert compose("dataset=xor", "network=iris").network.name == "iris"
    assert compose("network=iris", "dataset=xor").network.name == "iris"


def hydra_section(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True).hydra


def test_hydra_settings():
    hydra_cfg = hydra_section()
    assert hydra_cfg.job.chdir is False
    assert hydra_cfg.callbacks.mlflow_sweep._target_ == "zorb.runner.callbacks.MLflowSweepCallback"
    assert "version_base=\"1.3\"" in (ROOT / "run.py").read_text()


@pytest.mark.filterwarnings(r"ignore:\s*.hydra/launcher/[a-z_]+. is validated against ConfigStore schema")
@pytest.mark.parametrize("launcher, module, dataclass_name", [
    ("joblib", "hydra_plugins.hydra_joblib_launcher.config", "JobLibLauncherConf"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.config", "SlurmQueueConf"),
])
def test_launcher_configs_replace_the_plugins_defaults(launcher, module, dataclass_name):
    import importlib

    schema = getattr(importlib.import_module(module), dataclass_name)
    ours = OmegaConf.to_container(hydra_section(f"hydra/launcher={launcher}").launcher, resolve=False)
    assert {f.name for f in dataclasses.fields(schema)} == set(ours)
    assert ours["_target_"] == schema._target_


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = tracking.resolve_tracking_uri(None)
    assert default == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert Path(default[len("sqlite:///"):]).is_absolute()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////env/store.db")
    assert tracking.resolve_tracking_uri(None) == "sqlite:////env/store.db"
    assert tracking.resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri("sqlite:///rel/m.db") == f"sqlite:///{tmp_path / 'rel/m.db'}"


def test_artifacts_live_beside_a_sqlite_store():
    assert tracking.artifact_location("sqlite:////a/b/mlflow.db", "my exp/1") == "file:///a/b/mlartifacts/my_exp_1"
    assert tracking.artifact_location("http://host:5000", "x") is None


def test_flatten_config_to_params():
    flat = tracking.flatten({"a": {"b": 1, "c": [{"type": "dense", "units": 3}, {"type": "sigmoid"}]},
                             "d": None, "e": True, "f": {}, "g": 1e-15})
    assert flat == {"a.b": "1", "a.c.1.type": "dense", "a.c.1.units": "3", "a.c.2.type": "sigmoid",
                    "d": "null", "e": "true", "f": "{}", "g": "1e-15"}
    params = tracking.flatten(OmegaConf.to_container(compose(), resolve=True))
    # layer 1 of conv_dense is its convolution, as in the metrics (layer1.rank) and the log lines
    assert params["network.layers.1.type"] == "conv2d" and params["network.layers.4.units"] == "outputs"
    assert params["solver.name"] == "qr"
    assert all(len(k) <= 250 and len(v) <= tracking.MAX_PARAM_LENGTH for k, v in params.items())


def test_git_info():
    info = tracking.git_info()
    assert set(info) == {"git.commit", "git.dirty"}
    assert info["git.dirty"] in ("true", "false", "unknown")


@pytest.mark.parametrize("arguments, jobs", [
    (["dataset=iris,xor", "seed=0,1,2"], 6),
    (["solver.rcond=1e-15,1e-9,1e-6,-1", "dataset=iris"], 4),
    (["seed=range(0,5)"], 5),
    ([], 1),
])
def test_count_jobs(arguments, jobs):
    config = OmegaConf.create({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": arguments}}})
    assert hydra_callbacks.count_jobs(config) == jobs


def test_count_jobs_of_zorbs_sweeper():
    config = OmegaConf.create({"hydra": {
        "sweeper": {"_target_": "hydra_plugins.zorb_sweeper.zorb_sweeper.ZorbBasicSweeper", "params": None},
        "overrides": {"task": ["dataset=iris,xor", "seed=0,1,2"]}}})
    assert hydra_callbacks.count_jobs(config) == 6


def test_job_shape_keeps_choices_and_hydra_settings_whole_and_values_by_key():
    from hydra_plugins.zorb_sweeper.zorb_sweeper import job_shape

    groups = frozenset({"dataset", "method", "hydra"})
    assert job_shape(["dataset=iris", "seed=3", "solver.rcond=1e-9", "+extra=2", "~cache", "hydra.job.chdir=true",
                      "hydra/launcher=joblib", "network@_global_.network=sinc", "method=adam"], groups) == (
        "dataset=iris", "seed", "solver.rcond", "+extra", "~cache", "hydra.job.chdir=true",
        "hydra/launcher=joblib", "network@_global_.network=sinc", "method=adam")


def sweeper_checks(batch, sweeper_class: str):
    """The compositions a sweeper makes to check ``batch`` (lists of overrides), or its error."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.plugins import Plugins
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext, RunMode

    from zorb.runner import experiments

    experiments.register()
    setup_globals()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    config = loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
    sweeper = Plugins.instance().class_name_to_class[sweeper_class](max_batch_size=None)
    sweeper.config, sweeper.hydra_context = config, HydraContext(config_loader=loader, callbacks=Callbacks())
    composed = []
    compose = loader.load_sweep_config

    def counting(master_config, sweep_overrides):
        composed.append(list(sweep_overrides))
        return compose(master_config, sweep_overrides)

    loader.load_sweep_config = counting
    sweeper.validate_batch_is_legal(batch)
    return composed


ZORB_SWEEPER = "hydra_plugins.zorb_sweeper.zorb_sweeper.ZorbBasicSweeper"


def test_zorbs_sweeper_composes_one_job_of_each_shape():
    batch = [[f"dataset={d}", f"seed={s}", "solver.rcond=1e-9"] for d in ("iris", "xor") for s in range(3)]
    assert sweeper_checks(batch, ZORB_SWEEPER) == [batch[0], batch[3]]
    assert len(sweeper_checks(batch, "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")) == 6
    # a bad option, or a bad value of a typed hydra.* key, in any one job is still found
    from hydra.errors import ConfigCompositionException, HydraException

    with pytest.raises(HydraException, match="dataset/nope"):
        sweeper_checks([["dataset=iris", "seed=0"], ["dataset=nope", "seed=0"]], ZORB_SWEEPER)
    with pytest.raises((ConfigCompositionException, HydraException), match="maybe"):
        sweeper_checks([["hydra.job.chdir=false"], ["hydra.job.chdir=maybe"]], ZORB_SWEEPER)


def sweep_loader(master_overrides=()):
    """Hydra's config loader for conf/ and a multirun's master config composed with ``master_overrides``."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.utils import setup_globals
    from hydra.types import RunMode

    from zorb.runner import experiments

    experiments.register()
    setup_globals()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    return loader, loader.load_configuration("config", overrides=list(master_overrides), run_mode=RunMode.MULTIRUN)


def test_a_job_copied_from_its_shapes_first_equals_its_own_composition():
    from hydra_plugins.zorb_sweeper.zorb_sweeper import ShapeCachingLoader

    loader, master = sweep_loader(["experiment=paper_a"])
    caching = ShapeCachingLoader(loader, frozenset(loader.list_groups("")))
    composed = []
    compose = loader.load_sweep_config

    def counting(master_config, sweep_overrides):
        composed.append(list(sweep_overrides))
        return compose(master_config, sweep_overrides)

    pairs = [
        (["dataset=iris", "method=zorb", "seed=0"], ["dataset=iris", "method=zorb", "seed=7"]),
        (["dataset=sinc", "method=adam_lr1e-3", "seed=1"], ["dataset=sinc", "method=adam_lr1e-3", "seed=2"]),
        (["+extra=1", "solver.rcond=1e-9"], ["+extra=abc", "solver.rcond=null"]),
        (["++solver.rcond=1e-3", "network.spec='dense[8] tanh dense[outputs] softmax'", "dataset=xor"],
         ["++solver.rcond=1e-4", "network.spec=null", "dataset=xor"]),
        (["hydra.job.config.override_dirname.exclude_keys=[seed]", "seed=1", "tracking.experiment=a"],
         ["hydra.job.config.override_dirname.exclude_keys=[seed]", "seed=2", "tracking.experiment=b"]),
        (["~validation_fraction", "seed=1"], ["~validation_fraction", "seed=5"]),
    ]
    for first, second in pairs:
        for overrides in (first, second):
            loader.load_sweep_config = compose
            own = loader.load_sweep_config(master, overrides)
            loader.load_sweep_config = counting
            shared = caching.load_sweep_config(master, overrides)
            assert OmegaConf.to_yaml(shared) == OmegaConf.to_yaml(own), overrides
            assert list(shared.hydra.overrides.task) == [o for o in overrides if not o.startswith("hydra.")]
            for mine, its in ((shared, own), (shared.hydra, own.hydra)):
                assert (OmegaConf.is_struct(mine), OmegaConf.is_readonly(mine)) == \
                       (OmegaConf.is_struct(its), OmegaConf.is_readonly(its))
    assert composed == [first for first, _ in pairs]  # each second job copied its twin
    assert caching.load_sweep_config(master, ["dataset=iris", "method=zorb", "seed=9"]).seed == 9
    # a list or dict value is merged by Hydra into the composed value: such a job composes whole
    caching.load_sweep_config(master, ["limits.train_samples=[1,2]"])
    caching.load_sweep_config(master, ["limits.train_samples=[3]"])
    assert composed[-2:] == [["limits.train_samples=[1,2]"], ["limits.train_samples=[3]"]]
    # a bad value is still the error composition gives
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="extra"):
        caching.load_sweep_config(master, ["extra=1", "solver.rcond=1e-9"])


SCAN_BETWEEN_JOBS = """
import pickle, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from test_config import sweep_loader
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.plugins import Plugins
from hydra_plugins.zorb_sweeper import zorb_sweeper

loader, master = sweep_loader()  # Hydra's first plugin scan: it executes zorb_sweeper again
composed = []
compose = ConfigLoaderImpl.load_sweep_config

def counting(self, master_config, sweep_overrides):
    composed.append(list(sweep_overrides))
    return compose(self, master_config, sweep_overrides)

ConfigLoaderImpl.load_sweep_config = counting
caching = zorb_sweeper.ShapeCachingLoader(loader, frozenset(loader.list_groups("")))
task = pickle.dumps(caching)  # the loader as the sweep sends it with each job
caching.load_sweep_config(master, ["dataset=iris", "seed=0"])
second = pickle.loads(task)   # the next job, in the same worker
Plugins.instance()._initialize()  # then what Singleton.set_state does before each job
print(second.load_sweep_config(master, ["dataset=iris", "seed=1"]).seed, composed)
"""


def test_the_composed_shapes_outlive_hydras_plugin_scan():
    """A joblib worker rescans Hydra's plugins before each job (``Singleton.set_state``), which
    executes the sweeper's module again: a later job of a shape still copies the first. (In a
    process of its own: a rescan leaves this one's Hydra classes unpicklable.)"""
    done = subprocess.run([sys.executable, "-c", SCAN_BETWEEN_JOBS, str(Path(__file__).parent), str(ROOT)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "1 [['dataset=iris', 'seed=0']]"


def test_zorbs_sweeper_gives_its_launcher_the_caching_loader():
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext
    from hydra_plugins.zorb_sweeper.zorb_sweeper import ShapeCachingLoader, ZorbBasicSweeper

    loader, master = sweep_loader()
    sweeper = ZorbBasicSweeper(max_batch_size=None)
    sweeper.setup(hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()),
                  task_function=lambda config: None, config=master)
    for context in (sweeper.hydra_context, sweeper.launcher.hydra_context):
        assert isinstance(context.config_loader, ShapeCachingLoader)
        assert context.config_loader.delegate is loader
    assert pickle.loads(pickle.dumps(sweeper.hydra_context)).config_loader.token == sweeper.hydra_context.config_loader.token


def test_zorbs_sweeper_is_the_default():
    assert OmegaConf.select(compose_with_hydra(), "hydra.sweeper._target_") == ZORB_SWEEPER


def compose_with_hydra():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from zorb.runner import experiments

    experiments.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", return_hydra_config=True)


def test_count_jobs_of_an_unknown_sweeper_is_unknown():
    config = OmegaConf.create({"hydra": {"sweeper": {"_target_": "x.OptunaSweeper"}, "overrides": {"task": []}}})
    assert hydra_callbacks.count_jobs(config) is None


def parent_status(uri, state):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri).get_run(state["parent_run_id"]).info.status


def test_sweep_parent_closes_after_the_last_job(store, tmp_path):
    state = hydra_callbacks.SweepState(tmp_path / "sweep")
    opened = state.open_parent(tracking_uri=store, experiment="zorb", expected_jobs=3, tags={}, fresh=True)
    assert state.open_parent(tracking_uri=store, experiment="zorb", expected_jobs=3, tags={},
                             fresh=False) == opened
    state.record_job(0, "FINISHED")
    state.record_job(1, "FAILED")
    state.record_job(1, "FINISHED")  # the first record of a job wins
    assert parent_status(store, opened) == "RUNNING"
    state.record_job(2, "FINISHED")
    assert state.read()["closed"] == "FAILED" == parent_status(store, opened)
    assert state.close() == "FAILED"  # idempotent


def test_sweep_parent_closed_by_the_launcher_when_jobs_are_missing(store, tmp_path):
    state = hydra_callbacks.SweepState(tmp_path / "sweep")
    opened = state.open_parent(tracking_uri=store, experiment="zorb", expected_jobs=2, tags={}, fresh=True)
    state.record_job(0, "FINISHED")
    assert state.close() == "FAILED" == parent_status(store, opened)


def test_sweep_of_unknown_size_finishes_when_closed(store, tmp_path):
    state = hydra_callbacks.SweepState(tmp_path / "sweep")
    opened = state.open_parent(tracking_uri=store, experiment="zorb", expected_jobs=None, tags={}, fresh=True)
    for job in range(3):
        state.record_job(job, "FINISHED")
    assert parent_status(store, opened) == "RUNNING"
    assert state.close() == "FINISHED" == parent_status(store, opened)
    saved = json.loads((tmp_path / "sweep" / hydra_callbacks.STATE_FILE).read_text())
    assert saved["jobs"] == {"0": "FINISHED", "1": "FINISHED", "2": "FINISHED"}


def test_threads_per_job():
    cores = len(threads.available_cores())
    assert threads.threads_per_job("auto", workers=None) is None
    assert threads.threads_per_job("auto", workers=cores) == 1
    assert threads.threads_per_job("auto", workers=4 * cores) == 1
    assert threads.threads_per_job(3, workers=None) == 3
    assert threads.joblib_workers(-1, 8) == 8 and threads.joblib_workers(-2, 8) == 7
    for bad in (0, -1, "many", True):
        with pytest.raises(zorb.ConfigError, match="threads must be"):
            threads.threads_per_job(bad, workers=None)


def test_pin_takes_distinct_cores_and_limits_blas(tmp_path):
    """Two processes of one sweep pinned to one thread each take different slots (and so
    different cores where there are two), and JAX starts afterwards with that limit."""
    script = (
        "import json, os, sys, time\n"
        "from zorb.kernels import threads\n"
        "cores = threads.pin(1, slot_dir=__import__('pathlib').Path(sys.argv[1]), slots=2)\n"
        "import jax.numpy as jnp; float(jnp.ones(3).sum())\n"
        "from threadpoolctl import threadpool_info\n"
        "print(json.dumps({'cores': cores, 'affinity': sorted(os.sched_getaffinity(0)),\n"
        "  'blas': sorted({i['num_threads'] for i in threadpool_info()}), 'xla': os.environ['XLA_FLAGS'],\n"
        "  'omp': os.environ['OMP_NUM_THREADS']}), flush=True)\n"
        "time.sleep(3)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "slots")], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    for out in outs:
        assert out["affinity"] == out["cores"] and len(out["cores"]) == 1
        assert out["blas"] in ([], [1]) and out["omp"] == "1"
        assert threads.SINGLE_THREAD_XLA_FLAG in out["xla"]
    if len(os.sched_getaffinity(0)) >= 2:
        assert outs[0]["cores"] != outs[1]["cores"]


@dataclasses.dataclass
class SpectrumReport:
    """What the spectra figure reads of a solved layer (zorb.LayerReport's fields)."""
    index: int
    kind: str
    design_shape: tuple
    spectrum: np.ndarray
    cutoff: float
    rank: int
    cond: float
    u_rcond: float


def test_spectra_figure_renders(tmp_path):
    from zorb.runner.plots import spectra_figure

    reports = [SpectrumReport(1, "conv2d", (100, 10), np.logspace(2, -3, 10), 1e-1, 7, 1e3, 1e-3),
               SpectrumReport(3, "dense", (50, 9), np.r_[np.logspace(1, -1, 8), 0.0], 0.0, 8, 100.0, 0.0)]
    figure = spectra_figure(reports, title="t")
    figure.savefig(tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spectra_figure_labels_decades_plainly_and_clear_of_its_tick_labels():
    from zorb.runner.plots import spectra_figure

    # the widest labels a spectrum gets: 1e-13 on the y axis, 4 digits on the x axis
    reports = [SpectrumReport(i, "dense", (5000, 1001), np.logspace(3, -13, 1001), 1e-12, 990, 1e16, 1e-15) for i in (1, 3)]
    figure = spectra_figure(reports, title="fashion_mnist / mnist_6: spectra of [A, 1]")
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    for ax in figure.axes[:2]:
        labels = [label for label in ax.yaxis.get_ticklabels() if label.get_visible() and label.get_text()]
        assert {label.get_text() for label in labels} >= {"1e-12", "1e-6", "1"}
        widest_left = min(label.get_window_extent(renderer).x0 for label in labels)
        assert ax.yaxis.label.get_window_extent(renderer).x1 < widest_left
        assert ax.yaxis.label.get_window_extent(renderer).x0 > 0  # inside the figure
        lowest = min(label.get_window_extent(renderer).y0 for label in ax.xaxis.get_ticklabels() if label.get_text())
        assert ax.xaxis.label.get_window_extent(renderer).y1 < lowest
        assert ax.title.get_window_extent(renderer).y0 >= ax.get_window_extent(renderer).y1
