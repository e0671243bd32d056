"""Reading the composed config: every setting a run uses, validated before any compute.

Each function takes the config as plain containers (``plain_config``) and raises
``zorb.ConfigError`` with one sentence that says what to change.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import zorb
from zorb.errors import ConfigError
from zorb.runner.methods import METHODS

LIMITS = ("train_samples", "test_samples", "width", "steps")


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    name: str
    rcond: float | None  # None: the dtype's default (zorb.default_rcond)
    u_rcond: float | None
    b_rcond: float | None
    ridge: float | str
    per_layer: dict[int, dict[str, Any]]
    chunk_rows: int | None = None
    devices: int | str | None = None

    def fit_options(self) -> dict[str, Any]:
        return {"solver": self.name, "rcond": self.rcond, "u_rcond": self.u_rcond, "b_rcond": self.b_rcond,
                "ridge": self.ridge, "per_layer": self.per_layer, "chunk_rows": self.chunk_rows,
                "devices": self.devices}


def plain_config(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The config as plain resolved Python containers."""
    try:
        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"the config cannot be resolved: {first_line}") from None


def get(config: Mapping, *keys: str) -> Any:
    """``config[k1][k2]...`` with a ConfigError naming the missing key."""
    node: Any = config
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            path = ".".join(keys[: depth + 1])
            raise ConfigError(f"the config has no {path!r}: add it or pick a config that sets it")
        node = node[key]
    return node


def solver_settings(config: Mapping) -> SolverSettings:
    """The solver group, validated (``zorb.check_solver_options``) before any compute."""
    solver = get(config, "solver")
    name = get(config, "solver", "name")
    rcond = solver.get("rcond")
    u_rcond, b_rcond, ridge = solver.get("u_rcond"), solver.get("b_rcond"), solver.get("ridge", 0.0)
    zorb.check_solver_options(name, rcond, u_rcond, b_rcond, ridge, str(config.get("dtype", "float64")))
    per_layer: dict[int, dict[str, Any]] = {}
    for key, options in (solver.get("per_layer") or {}).items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"solver.per_layer keys are 1-based layer positions, got {key!r}") from None
        if not isinstance(options, Mapping):
            raise ConfigError(f"solver.per_layer.{key} must be a mapping such as {{rcond: 1e-9}}, got {options!r}")
        per_layer[index] = dict(options)
    chunk_rows, devices = solver.get("chunk_rows"), solver.get("devices")
    check_scale_options(name, per_layer, chunk_rows, devices)
    return SolverSettings(name=name, rcond=rcond, u_rcond=u_rcond, b_rcond=b_rcond, ridge=ridge,
                          per_layer=per_layer, chunk_rows=chunk_rows, devices=devices)


def check_scale_options(name: str, per_layer: Mapping[int, Mapping[str, Any]], chunk_rows, devices) -> None:
    """``solver.chunk_rows`` (null or a positive integer) and ``solver.devices`` (null, a
    positive integer or "all"), and that every layer's solver can stream or split its rows
    when they ask for it (``zorb.fit`` checks the same, but only after the data is loaded)."""
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ConfigError(f"solver.chunk_rows must be a positive integer or null, got {chunk_rows!r}")
    if devices is not None and devices != "all" and \
            (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ConfigError(f"solver.devices must be a positive integer, 'all' or null, got {devices!r}")
    import jax

    available = jax.device_count()
    if isinstance(devices, int) and devices > available:
        raise ConfigError(f"solver.devices={devices} but JAX sees {available} device(s): use at most "
                          f"{available}, 'all' or null")
    count = available if devices == "all" else devices or 1
    used = [(None, name)] + [(index, options["solver"]) for index, options in per_layer.items()
                             if "solver" in options]
    for index, layer_solver in used:
        solver = zorb.SOLVERS.get(layer_solver) if isinstance(layer_solver, str) else None
        if solver is None or solver.streams:  # an unknown name fails in zorb.core.fit's own check
            continue
        where = f"solver.per_layer.{index}.solver={layer_solver}" if index is not None else f"solver={layer_solver}"
        if chunk_rows is not None:
            raise ConfigError(f"{where} needs the whole design matrix in memory, so it cannot stream rows with "
                              f"solver.chunk_rows: use solver=qr (the same answer) or gram, or solver.chunk_rows=null")
        if count > 1:
            raise ConfigError(f"{where} cannot split rows over {count} devices: use solver=qr (the same answer) "
                              f"or gram, or solver.devices=null")


def method_settings(config: Mapping) -> tuple[str, Callable, dict[str, Any]]:
    """``(name, function, options)`` of the method group, its options checked against the
    function's keyword-only parameters before any compute."""
    options = dict(get(config, "method"))
    name = options.pop("name", None)
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    function = METHODS[name]
    accepted = [p for p in inspect.signature(function).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("seed", "callback", "progress")]
    names = [p.name for p in accepted]
    unknown = sorted(set(options) - set(names))
    if unknown:
        known = f"options: {', '.join(names)}" if names else "it takes none"
        raise ConfigError(f"method {name} has no option {unknown[0]!r} ({known})")
    missing = [p.name for p in accepted if p.default is inspect.Parameter.empty and p.name not in options]
    if missing:
        raise ConfigError(f"method {name} needs method.{missing[0]}: set it, or pick method={name} "
                          f"(conf/method/{name}.yaml sets every option)")
    return name, function, options


def read_limits(config: Mapping) -> dict[str, int | None]:
    """The ``limits`` caps, each a positive integer or None."""
    limits = dict(config.get("limits") or {})
    unknown = sorted(set(limits) - set(LIMITS))
    if unknown:
        raise ConfigError(f"limits has no key {unknown[0]!r} (keys: {', '.join(LIMITS)})")
    for key in LIMITS:
        limits[key] = positive_int_or_null(f"limits.{key}", limits.get(key))
    return limits


_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def load_plugins(config: Mapping) -> list[str]:
    """Import the modules ``plugins`` names (``[my_package.my_layers]``), so that the layers they
    register with ``zorb.register_layer`` can be used by ``network.layers`` and ``network.spec``."""
    plugins = config.get("plugins") or []
    if isinstance(plugins, str) or not isinstance(plugins, list):
        raise ConfigError(f"plugins must be a list of module names such as [my_package.my_layers], got {plugins!r}")
    for name in plugins:
        if not isinstance(name, str) or not _MODULE_NAME.match(name):
            raise ConfigError(f"plugins entry {name!r} is not a module name such as my_package.my_layers")
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(f"plugins: module {name!r} cannot be imported ({error}): install it, or run from the "
                              f"folder that holds it or add that folder to PYTHONPATH") from None
    return list(plugins)


def resolve_network(config: Mapping) -> dict[str, Any]:
    """``config`` with ``network.spec`` (a one-line network, ``zorb.core.spec``), when set, turned
    into ``network.layers``, so that the run records the layer list it builds."""
    config = dict(config)
    network = config.get("network")
    if isinstance(network, Mapping) and network.get("spec") is not None:
        from zorb.core.spec import parse_spec

        config["network"] = {**network, "name": "spec", "layers": parse_spec(network["spec"])}
    return config


def apply_limits(config: Mapping) -> dict[str, Any]:
    """``config`` with ``network.spec`` resolved (``resolve_network``), ``limits.width`` applied to
    the network's dense units and conv2d filters and ``limits.steps`` to the method's ``steps`` (or ``max_steps``), so
    that the params record what runs. ``limits.train_samples`` and ``limits.test_samples`` apply
    when the data is loaded."""
    limits = read_limits(config)
    config = copy.deepcopy(resolve_network(config))
    width, steps = limits["width"], limits["steps"]
    network = config.get("network")
    if width is not None and isinstance(network, Mapping):
        for spec in network.get("layers") or []:
            for key in ("units", "filters"):
                value = spec.get(key) if isinstance(spec, Mapping) else None
                if isinstance(value, int) and not isinstance(value, bool) and value > width:
                    spec[key] = width
    method = config.get("method")
    if steps is not None and isinstance(method, Mapping):
        for key in ("steps", "max_steps"):
            value = method.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > steps:
                method[key] = steps
    return config


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    folder: Path   # absolute
    data: bool     # parsed datasets as .npy under folder/data (zorb.data.cache)
    compile: bool  # JAX's persistent compilation cache under folder/jax


def cache_settings(config: Mapping) -> CacheSettings:
    """The ``cache`` group: ``dir`` (null: ``.cache`` in the project root; a relative path is
    taken from the directory you run in), ``data`` and ``compile`` (booleans)."""
    from zorb.runner.tracking import project_root

    cache = config.get("cache") or {}
    unknown = sorted(set(cache) - {"dir", "data", "compile"})
    if unknown:
        raise ConfigError(f"cache has no key {unknown[0]!r} (keys: dir, data, compile)")
    for key in ("data", "compile"):
        check_flag(f"cache.{key}", cache.get(key, True))
    folder = cache.get("dir")
    folder = Path(str(folder)).expanduser().absolute() if folder else project_root() / ".cache"
    return CacheSettings(folder=folder, data=cache.get("data", True), compile=cache.get("compile", True))


def check_flag(name: str, value) -> bool:
    """``value`` if it is a boolean, else ConfigError naming the setting ``name``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def validation_fraction(config: Mapping) -> float:
    fraction = config.get("validation_fraction") or 0.0
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"validation_fraction must be a number in [0, 1), got {fraction!r}")
    return float(fraction)


def init_paths(config: Mapping) -> tuple[Path | None, Path | None]:
    """``(init_file, init_out)`` as paths; init_file must exist, and init_out's folder must
    exist (or be made) and take a new file."""
    init_file, init_out = config.get("init_file"), config.get("init_out")
    init_file = Path(str(init_file)).expanduser() if init_file else None
    init_out = Path(str(init_out)).expanduser() if init_out else None
    if init_file is not None and not init_file.is_file():
        raise ConfigError(f"init_file {init_file} does not exist: write it first with init_out={init_file} "
                          f"(and the same dataset, network and seed)")
    if init_out is not None:
        try:
            if init_out.is_dir():
                raise IsADirectoryError(21, "it is a folder")
            init_out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=init_out.parent):
                pass
        except OSError as error:
            raise ConfigError(f"init_out={init_out} cannot be written ({error.strerror or error}): choose a "
                              f"file in a writable folder") from None
    return init_file, init_out


def init_seed(config: Mapping) -> int:
    """The seed of the initial weights: ``init_seed``, or ``seed`` when it is null."""
    value = config.get("init_seed")
    if value is None:
        return get(config, "seed")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"init_seed must be a non-negative integer or null (the run's seed), got {value!r}")
    return value


def positive_int_or_null(name: str, value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a positive integer or null, got {value!r}")
    return value


def tracking_settings(config: Mapping) -> tuple[bool, str | None, str]:
    """``(enabled, uri, experiment)`` of the tracking group, checked before the store is opened."""
    tracking = get(config, "tracking")
    if not isinstance(tracking, Mapping):
        raise ConfigError(f"tracking must be a config group (a mapping), got {tracking!r}")
    for key in ("enabled", "log_model"):
        check_flag(f"tracking.{key}", tracking.get(key, True))
    enabled, uri = get(config, "tracking", "enabled"), tracking.get("uri")
    experiment = tracking.get("experiment")
    if enabled and (not isinstance(experiment, str) or not experiment.strip()):
        raise ConfigError(f"tracking.experiment must be a non-empty name, got {experiment!r}")
    if uri is not None and (not isinstance(uri, str) or not uri):
        raise ConfigError(f"tracking.uri must be a store URI such as sqlite:///mlflow.db or null, got {uri!r}")
    return enabled, uri, experiment


def check_settings(config: Mapping) -> None:
    """Every setting a run reads, checked before data is loaded, so a bad value costs no fit:
    ``seed``, ``dtype``, ``threads``, ``eval_batch_size``, ``data_dir``,
    ``init_file``/``init_out``, ``validation_fraction``, ``limits``, the solver and method
    groups and ``network.layers`` (each layer's own options are checked when the network is
    built, before the fit). The tracking group is ``tracking_settings``'s."""
    from zorb.core.network import DTYPES
    from zorb.kernels.threads import threads_per_job

    seed = get(config, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    dtype = config.get("dtype", "float64")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    threads_per_job(config.get("threads", "auto"), workers=None)
    positive_int_or_null("eval_batch_size", config.get("eval_batch_size"))
    data_dir = get(config, "data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(f"data_dir must be a folder name, got {data_dir!r}")
    for key in ("dataset", "network"):
        if not isinstance(get(config, key), Mapping):
            raise ConfigError(f"{key} must be a config group (a mapping), got {config[key]!r}")
    name = get(config, "dataset", "name")
    if not isinstance(name, str):
        raise ConfigError(f"dataset.name must be a dataset's name, got {name!r}")
    init_paths(config)
    validation_fraction(config)
    read_limits(config)
    solver_settings(config)
    method_settings(config)
    layer_specs(config)


def layer_specs(config: Mapping) -> list[dict[str, Any]]:
    layers = get(resolve_network(config), "network", "layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("network.layers must be a non-empty list of layer specs such as {type: dense, units: 10}")
    return [dict(spec) if isinstance(spec, Mapping) else spec for spec in layers]
