"""A table and a figure for any sweep, from its MLflow runs (``scripts/tables.py --sweep``,
and the sweep callback when a multirun ends).

The rows group the sweep's finished runs by the keys it swept other than ``seed`` (the
parent's ``zorb.swept_keys`` tag; a config group such as ``dataset`` reads its ``.name``
param); each figure is the mean ± standard deviation over the runs of a row. The figure
shows the main metric (test accuracy where every run has one, else test error) against
each swept key, one line per method. The paper's experiments also have their own tables
(``zorb.runner.tables``).

    parent = latest_sweep(client)
    runs = finished_runs(uri, parent)     # mlflow.search_runs' DataFrame
    table = sweep_table(parent, runs)     # a DataFrame, one row per group
    log_sweep_summary(uri, parent.info.run_id, Path("tables"))
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SWEPT_KEYS_TAG = "zorb.swept_keys"
"""On a sweep's parent run: the config keys the sweep varies, comma-separated."""
METRICS = ("train_error", "test_error", "train_accuracy", "test_accuracy", "fit_seconds")
SEED = "seed"
METHOD = "method"


def latest_sweep(client):
    """The parent run of the latest sweep in the store (any experiment)."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiment_ids, filter_string="tags.`zorb.role` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError("no sweep in this store: run `python run.py -m ...` first, or pass the store "
                          "with --tracking-uri")
    return runs[0]


def swept_keys(parent, runs) -> list[str]:
    """The param columns of ``runs`` (``mlflow.search_runs``' DataFrame) that the sweep
    swept: a key is its own param (``solver.rcond``) or a group's name (``dataset`` ->
    ``dataset.name``). Without the parent's tag, the params whose values differ."""
    listed = [key for key in parent.data.tags.get(SWEPT_KEYS_TAG, "").split(",") if key]
    if not listed:
        return sorted(column[len("params."):] for column in runs.columns
                      if column.startswith("params.") and runs[column].nunique(dropna=False) > 1)
    columns = []
    for key in listed:
        for column in (key, f"{key}.name"):
            if f"params.{column}" in runs.columns:
                columns.append(column)
                break
    return columns


def finished_runs(uri: str, parent):
    """The sweep's finished child runs as ``mlflow.search_runs`` gives them (a DataFrame:
    ``params.*``, ``metrics.*``, ``tags.*`` columns), in the order of their jobs."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(uri):  # search_runs reads MLflow's global store
        runs = mlflow.search_runs([parent.info.experiment_id], max_results=100_000,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                                f"and attributes.status = 'FINISHED'")
    job = "tags.zorb.job_num"
    return runs.sort_values(job, key=lambda nums: nums.astype(int), ignore_index=True) if job in runs else runs


def group_columns(parent, runs) -> list[str]:
    """The param columns a row is one value of: the swept keys but ``seed``, then the method,
    then the solver where it varies (``method=zorb_svd,zorb_qr`` sweeps ZORB's solvers)."""
    keys = [key for key in swept_keys(parent, runs) if key != SEED]
    extra = [f"{METHOD}.name"]
    if "params.solver.name" in runs.columns and runs["params.solver.name"].nunique() > 1:
        extra.append("solver.name")
    return keys + [key for key in extra if key not in keys]


def sweep_table(parent, runs):
    """One row per group of the sweep's finished ``runs``: its keys, ``runs`` (how many), the
    seeds, and ``<metric>_mean`` / ``<metric>_std`` (population, ddof=0) of each metric the
    runs have. Raises LookupError when there is no finished run."""
    if runs.empty:
        raise LookupError(f"sweep run {parent.info.run_id} has no finished runs")
    keys = group_columns(parent, runs)
    metrics = [f"metrics.{m}" for m in METRICS if f"metrics.{m}" in runs.columns and runs[f"metrics.{m}"].notna().any()]
    grouped = runs.groupby([f"params.{key}" for key in keys], sort=False, dropna=False)
    table = grouped[metrics].agg(["mean", lambda values: values.std(ddof=0)])
    table.columns = [f"{column[len('metrics.'):]}_{'mean' if stat == 'mean' else 'std'}" for column, stat in table.columns]
    table.insert(0, "seeds", grouped[f"params.{SEED}"].agg(lambda seeds: " ".join(sorted(seeds, key=int))))
    table.insert(0, "runs", grouped.size())
    table.index.names = keys
    return table.reset_index()


def main_metric(table) -> str:
    """``test_accuracy`` where every row has one, else ``test_error``."""
    if "test_accuracy_mean" in table.columns and table["test_accuracy_mean"].notna().all():
        return "test_accuracy"
    return "test_error"


def markdown(table, title: str) -> str:
    """The table as Markdown: ``mean ± std`` per metric, one row per group."""
    import pandas as pd

    from zorb.runner.tables import DASH, METRIC_LABELS, _md_row

    keys = list(table.columns[:list(table.columns).index("runs")])
    metrics = [column[:-len("_mean")] for column in table.columns if column.endswith("_mean")]

    def figure(mean: float, std: float, count: int, digits: int) -> str:
        if pd.isna(mean):
            return DASH
        return f"{mean:.{digits}g}" if count == 1 else f"{mean:.{digits}g} ± {std:.2g}"

    lines = [f"# {title}", "", _md_row(keys + ["runs", "seeds"] + [METRIC_LABELS.get(m, m) for m in metrics]),
             _md_row(["---"] * (len(keys) + 2 + len(metrics)))]
    for _, row in table.iterrows():
        cells = [str(row[key]) for key in keys] + [str(row["runs"]), row["seeds"]]
        cells += [figure(row[f"{m}_mean"], row[f"{m}_std"], row["runs"], 3 if m.endswith("seconds") else 4)
                  for m in metrics]
        lines.append(_md_row(cells))
    lines += ["", "Mean ± standard deviation (population, ddof=0) over the runs of each row, which differ in "
                  "seed only. Error: mean over samples of the Euclidean norm of the residual, in target units; "
                  "accuracy: argmax match (several outputs) or rounding (one output), '—' for regression."]
    return "\n".join(lines) + "\n"


def sweep_figure(parent, runs, table):
    """The main metric against each swept key but ``seed``, one line per method (mean over
    the other keys and the seeds, with its standard deviation as error bars)."""
    from zorb.runner.plots import metric_against_keys

    metric = main_metric(table)
    keys = [key for key in swept_keys(parent, runs) if key not in (SEED, f"{METHOD}.name")] or [f"{METHOD}.name"]
    frame = runs.rename(columns=lambda c: c.split(".", 1)[1] if c.startswith(("params.", "metrics.")) else c)
    return metric_against_keys(frame, metric, keys, line=f"{METHOD}.name",
                               title=f"{parent.info.run_name}: {metric.replace('_', ' ')} (mean ± std over seeds)")


def write_sweep_summary(uri: str, parent, out_dir: Path) -> list[Path]:
    """``sweep_<run id>.md``, ``.csv`` and ``.png`` in ``out_dir``; returns their paths."""
    runs = finished_runs(uri, parent)
    table = sweep_table(parent, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"sweep_{parent.info.run_id}"
    paths = [stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".png")]
    paths[0].write_text(markdown(table, f"{parent.info.run_name}: mean ± std over seeds"))
    table.to_csv(paths[1], index=False)
    sweep_figure(parent, runs, table).savefig(paths[2], dpi=110)
    return paths


def log_sweep_summary(uri: str, parent_run_id: str, out_dir: Path | None = None) -> list[Path]:
    """Write the sweep's table and figure (to ``out_dir``, else a temporary folder) and log
    them on its parent run under ``tables/``; returns the paths written in ``out_dir``."""
    from zorb.runner import tracking

    client = tracking.client(uri)
    parent = client.get_run(parent_run_id)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_sweep_summary(uri, parent, out_dir or Path(folder))
        for path in paths:
            tracking.retrying(client.log_artifact, parent_run_id, str(path), "tables")
        log.info("sweep table and figure logged on parent run %s", parent_run_id)
        return paths if out_dir is not None else []
