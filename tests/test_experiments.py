"""The paper's experiments (experiments/*.yaml): their settings and sweeps as composed, and every
one end to end under profile=smoke through the real CLI, then scripts/tables.py on the runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from data_fixtures import write_tiny_cifar, write_tiny_mnist
from runner_fixtures import CONF, ROOT, RUN_PY, cli_env, client, compose, run_cli, runs_of, template_store  # noqa: F401

from zorb.runner import experiments

from zorb.runner import callbacks as hydra_callbacks

EXPERIMENTS = {"paper_a": 350, "paper_b": 9, "paper_c": 480, "paper_b_fashion": 3 * 7, "paper_c_fashion": 3 * 8 * 1 * 4}
SMOKE_JOBS = {"paper_a": 5 * 7 * 2, "paper_b": 3 * 3 * 2, "paper_c": 3 * 8 * 2 * 2, "paper_b_fashion": 3 * 7 * 2,
              "paper_c_fashion": 3 * 8 * 2 * 4}
# The Fashion-MNIST experiments smoke one seed (every network and method; for C two of the
# eight training-set sizes): a quarter (B: half) of their smoke jobs, so the five sweeps share the
# machine in reasonable time.
SMOKE_OVERRIDES = {"paper_a": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                   "paper_b_fashion": ["seed=0"], "paper_c_fashion": ["seed=0", "dataset.train_samples=10,1280"]}
SMOKE_RUNS = {**SMOKE_JOBS, "paper_b_fashion": 3 * 7, "paper_c_fashion": 3 * 2 * 4}
SMOKE_METHODS = {"paper_a": {"zorb", "mlelm", "adam"}, "paper_b": {"zorb", "mlelm", "adam"}, "paper_c": {"zorb", "adam"},
                 "paper_b_fashion": {"zorb", "mlelm", "adam", "adam_converged", "logreg"},
                 "paper_c_fashion": {"zorb", "adam", "adam_converged", "logreg"}}
TABLES_PY = ROOT / "scripts" / "tables.py"


def composed(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    experiments.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("network, rate", [("mnist_6", 1e-3), ("mnist_8", 1e-3), ("mnist_11", 5e-4)])
def test_paper_b_fashion_settings(network, rate):
    def cfg(method):
        return compose("experiment=paper_b_fashion", f"network={network}", f"method={method}")

    adam = cfg("adam")
    assert (adam.dataset.name, adam.dataset.train_samples, adam.dataset.test_samples) == ("fashion_mnist", None, None)
    assert (adam.method.learning_rate, adam.method.steps, adam.method.loss, adam.method.test_curve) == (
        rate, 5000, "sse", True)
    assert adam.seed == 0 and adam.network.name == network
    assert [(cfg(f"zorb_{s}").solver.name, cfg(f"zorb_{s}").solver.rcond, cfg(f"zorb_{s}").method.name)
            for s in ("svd", "qr", "gram")] == [("svd", 1e-15, "zorb"), ("qr", 1e-15, "zorb"), ("gram", 1e-7, "zorb")]
    assert cfg("mlelm").solver.rcond == 1e-15
    converged = cfg("adam_converged").method
    assert (list(converged.learning_rates), converged.validation_fraction, converged.eval_every, converged.patience,
            converged.loss) == ([3e-3, 1e-3, 3e-4], 0.1, 1688, 5, "cross_entropy")
    assert list(cfg("logreg").method.C) == [0.01, 0.1, 1.0]
    params = composed("experiment=paper_b_fashion").hydra.sweeper.params
    assert params.method.split(",") == ["zorb_svd", "zorb_qr", "zorb_gram", "mlelm", "adam", "adam_converged", "logreg"]


@pytest.mark.parametrize("network, rcond, rate", [("conv1", 1e-2, 1e-3), ("conv2", 1e-9, 1e-3), ("conv3", 1e-9, 1e-4)])
def test_paper_c_fashion_settings_and_the_conv_networks_on_28x28x1(network, rcond, rate, tmp_path):
    cfg = compose("experiment=paper_c_fashion", f"network={network}", "method=adam", "dataset.train_samples=40")
    assert (cfg.solver.name, cfg.solver.rcond) == ("svd", rcond)
    assert (cfg.method.learning_rate, cfg.method.steps, cfg.method.loss, cfg.method.test_curve) == (
        rate, 200_000, "cross_entropy", True)
    assert (cfg.dataset.name, cfg.dataset.train_samples, cfg.dataset.balanced, cfg.dataset.replace,
            cfg.dataset.test_samples) == ("fashion_mnist", 40, True, True, None)
    params = composed("experiment=paper_c_fashion").hydra.sweeper.params
    assert params["dataset.train_samples"] == "10,20,40,80,160,320,640,1280"
    assert params.method == "zorb,adam,adam_converged,logreg" and "seed" not in params and cfg.seed == 0
    # the paper's CIFAR-10 networks build on Fashion-MNIST's 28x28x1 images: 3x3 valid convolutions
    import zorb

    net = zorb.build_network([dict(s) for s in cfg.network.layers], (28, 28, 1), output_dim=10)
    side = 28 - 2 * len(net.parametric_indices[:-1])
    filters = {"conv1": 32, "conv2": 64, "conv3": 128}[network]
    assert net.layers[-2].in_shape == (side * side * filters,) and net.output_shape == (10,)


def test_every_experiment_file_is_an_option_of_the_experiment_group():
    assert experiments.register() == sorted([*EXPERIMENTS, "discrete"])
    assert experiments.package_of("# @package _global_\n# text\nkey: 1\n") == "_global_"
    assert experiments.package_of("key: 1\n# @package foo\n") is None


@pytest.mark.parametrize("name, jobs", EXPERIMENTS.items())
def test_experiment_sweeps_the_papers_grid(name, jobs):
    cfg = composed(f"experiment={name}")
    assert hydra_callbacks.count_jobs(cfg) == jobs
    assert cfg.tracking.experiment == name
    assert cfg.limits.width is None and cfg.dtype == "float64"
    smoke = composed(f"experiment={name}", "profile=smoke")
    assert hydra_callbacks.count_jobs(smoke) == SMOKE_JOBS[name]


def test_discrete_sweeps_four_datasets_three_methods_ten_seeds():
    cfg = composed("experiment=discrete")
    assert hydra_callbacks.count_jobs(cfg) == 4 * 3 * 10 and cfg.tracking.experiment == "discrete"
    assert hydra_callbacks.count_jobs(composed("experiment=discrete", "profile=smoke")) == 4 * 3 * 2


def test_paper_a_settings():
    params = composed("experiment=paper_a").hydra.sweeper.params
    assert params.dataset.split(",") == ["boston", "sinc", "iris", "xor", "two_spirals"]
    methods = params.method.split(",")
    assert methods[:2] == ["zorb", "mlelm"]
    rates = [compose("experiment=paper_a", f"method={m}").method.learning_rate for m in methods[2:]]
    assert rates == [1e-2, 5e-3, 1e-3, 5e-4, 1e-4]
    for dataset in params.dataset.split(","):
        cfg = compose("experiment=paper_a", f"dataset={dataset}", "method=adam_lr1e-3")
        assert cfg.network.name == dataset and cfg.solver.rcond == 1e-15
        assert (cfg.method.name, cfg.method.steps, cfg.method.batch_size, cfg.method.loss) == ("adam", 5000, 32, "sse")
        assert cfg.validation_fraction == 0.2


@pytest.mark.parametrize("network, rate", [("mnist_6", 1e-3), ("mnist_8", 1e-3), ("mnist_11", 5e-4)])
def test_paper_b_settings(network, rate):
    cfg = compose("experiment=paper_b", f"network={network}", "method=adam")
    assert (cfg.dataset.name, cfg.dataset.train_samples, cfg.dataset.test_samples) == ("mnist", None, None)
    assert cfg.method.learning_rate == rate and cfg.method.steps == 5000 and cfg.method.loss == "sse"
    assert cfg.solver.rcond == 1e-15 and cfg.seed == 0
    assert compose("experiment=paper_b", f"network={network}", "method=mlelm").method.name == "mlelm"


@pytest.mark.parametrize("network, rcond, rate", [("conv1", 1e-2, 1e-3), ("conv2", 1e-9, 1e-3), ("conv3", 1e-9, 1e-4)])
def test_paper_c_settings(network, rcond, rate):
    cfg = compose("experiment=paper_c", f"network={network}", "method=adam", "dataset.train_samples=40")
    assert cfg.solver.rcond == rcond == compose(f"network={network}").network.rcond
    assert (cfg.method.learning_rate, cfg.method.steps, cfg.method.loss) == (rate, 200_000, "cross_entropy")
    assert (cfg.dataset.name, cfg.dataset.train_samples, cfg.dataset.balanced, cfg.dataset.replace,
            cfg.dataset.test_samples) == ("cifar10", 40, True, True, None)
    params = composed("experiment=paper_c").hydra.sweeper.params
    assert params["dataset.train_samples"] == "10,20,40,80,160,320,640,1280"
    assert params.method == "zorb,adam" and params.seed == "range(0,10)"


@pytest.mark.slow
def test_paper_b_without_mnist_stops_before_any_job(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    result = run_cli("-m", "experiment=paper_b", f"data_dir={tmp_path / 'empty'}", f"tracking.uri={uri}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert "MNIST/raw" in result.stderr and "prepare_data.py mnist" in result.stderr
    assert "no job was started" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "store" / "mlflow.db").exists() and not (tmp_path / "sweep").exists()


def test_data_check_refuses_a_sweep_without_its_image_files_unless_the_data_is_swept(tmp_path):
    from omegaconf import open_dict

    cfg = composed("experiment=paper_c", f"data_dir={tmp_path}")
    with pytest.raises(SystemExit, match=r"cifar10 needs .*data_batch_1.*prepare_data.py cifar10.*no job was started"):
        hydra_callbacks.DataCheckCallback().on_multirun_start(cfg)
    with open_dict(cfg):
        cfg.hydra.overrides.task = [f"data_dir={tmp_path},{tmp_path / 'other'}"]
    hydra_callbacks.DataCheckCallback().on_multirun_start(cfg)  # each job checks its own folder
    write_tiny_cifar(tmp_path, n_train=10, n_test=10)
    hydra_callbacks.DataCheckCallback().on_multirun_start(composed("experiment=paper_c", f"data_dir={tmp_path}"))


# --- every experiment end to end under profile=smoke ---------------------------------------

@pytest.fixture(scope="module")
def smoke(tmp_path_factory, template_store):
    """The three smoke sweeps, run at once into one store (paper_a with two joblib workers,
    whose processes compose their jobs from the registered experiments too)."""
    root = tmp_path_factory.mktemp("smoke")
    (root / "store").mkdir()
    shutil.copy(template_store, root / "store" / "mlflow.db")
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    data_dir = root / "data"
    write_tiny_mnist(data_dir, n_train=60, n_test=20)
    write_tiny_cifar(data_dir, kind="cifar10", n_train=40, n_test=20)
    write_tiny_mnist(data_dir, n_train=60, n_test=20, name="FashionMNIST", seed=1)  # not Debian's full set
    processes = {}
    for name in EXPERIMENTS:
        log = open(root / f"{name}.log", "w")
        processes[name] = (subprocess.Popen(
            [sys.executable, str(RUN_PY), "-m", f"experiment={name}", "profile=smoke", f"data_dir={data_dir}",
             f"tracking.uri={uri}", f"hydra.sweep.dir={root / name}", *SMOKE_OVERRIDES.get(name, [])],
            cwd=root, env=cli_env(), stdout=log, stderr=subprocess.STDOUT), log)
    codes = {}
    for name, (process, log) in processes.items():
        try:
            codes[name] = process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    return {"root": root, "uri": uri, "codes": codes}


def sweep_runs(uri: str, name: str):
    runs = runs_of(uri, name)
    parents = [r for r in runs if r.data.tags.get("zorb.role") == "sweep"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_sweep_runs_every_job(smoke, name):
    log = (smoke["root"] / f"{name}.log").read_text()
    assert smoke["codes"][name] == 0, log[-3000:]
    parent, children = sweep_runs(smoke["uri"], name)
    assert parent.info.status == "FINISHED" and parent.data.tags["zorb.experiment"] == name
    assert len(children) == SMOKE_RUNS[name]
    assert all(c.info.status == "FINISHED" and c.data.tags["zorb.experiment"] == name for c in children)
    assert all(c.data.params["limits.width"] == "4" for c in children)
    methods = {c.data.params["method.name"] for c in children}
    assert methods == SMOKE_METHODS[name]
    if name == "paper_b_fashion":  # ZORB once per solver, each at its cut
        zorb = [c.data.params for c in children if c.data.params["method.name"] == "zorb"]
        assert sorted({(p["solver.name"], p["solver.rcond"]) for p in zorb}) == [
            ("gram", "1e-07"), ("qr", "1e-15"), ("svd", "1e-15")]


REGRESSION = ("boston", "sinc")


@pytest.mark.slow
def test_tables_from_the_smoke_sweeps_fill_every_cell(smoke):
    out = smoke["root"] / "tables"
    result = subprocess.run([sys.executable, str(TABLES_PY), *EXPERIMENTS, "--tracking-uri", smoke["uri"],
                             "--out-dir", str(out)], cwd=smoke["root"], env=cli_env(), capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    for name in EXPERIMENTS:
        text = (out / f"{name}.md").read_text()
        table = text.split("\n\n")[1].splitlines()  # the main table
        header = [cell.strip() for cell in table[0].strip("|").split("|")]
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
        assert len(rows) >= {"paper_a": 15, "paper_b": 9, "paper_c": 48, "paper_b_fashion": 21,
                             "paper_c_fashion": 24}[name]
        for row in rows:
            cells = dict(zip(header, row))
            assert all(cells.values()), row
            numbers = ["train error", "test error", "fit time (s)"]
            if cells.get("dataset") not in REGRESSION:
                numbers += ["train accuracy", "test accuracy"]
            if cells["method"].startswith("Adam"):
                numbers += ["speed-up", "learning rate"]
            for column in numbers:
                assert cells[column][0].isdigit(), (column, row)
        assert "shrunk by the runner's caps" in text
        parent, _ = sweep_runs(smoke["uri"], name)
        logged = {a.path for a in client(smoke["uri"]).list_artifacts(parent.info.run_id, "tables")}
        # beside the sweep's own table and figure (tables/sweep_<id>.*), logged when it ended
        assert {f"tables/{name}.md", f"tables/{name}.csv"} <= logged
        assert {path for path in logged if path.startswith("tables/sweep_")} == {
            f"tables/sweep_{parent.info.run_id}.{suffix}" for suffix in ("md", "csv", "png")}
    for name in ("paper_b_fashion", "paper_c_fashion"):
        text = (out / f"{name}.md").read_text()
        assert text.startswith(f"# {name} (Fashion-MNIST): ") and "time to ZORB's test accuracy (s)" in text
        assert "Adam to convergence" in text and "logistic regression (scikit-learn)" in text
    labels = [line.split(" | ")[1] for line in (out / "paper_b_fashion.md").read_text().splitlines()
              if line.startswith("| mnist_6 |")]
    assert labels == ["ZORB (svd)", "ZORB (qr)", "ZORB (gram)", "ML-ELM", "Adam",
                      "Adam to convergence (rate by validation, early stopping)", "logistic regression (scikit-learn)"]
    paper_a = (out / "paper_a.md").read_text()
    assert "rate by test error (paper)" in paper_a and "Adam at every learning rate" in paper_a
    assert os.path.getsize(out / "paper_c.csv") > 0
