"""Paper-style tables from a sweep's MLflow runs (``scripts/tables.py``).

One row per cell of the table (dataset, network and training-set size, whichever vary in
the sweep) and method, with the mean ± standard deviation over seeds of the train/test
error, train/test accuracy and fit time. Where Adam ran at several learning rates, two of
them are shown: the paper's choice (the lowest mean test error, as the paper's code did) and
the honest one (the lowest mean validation error, ``val_error``, from runs with
``validation_fraction > 0``). Adam's rows carry the paper's speed-up: Adam's time to reach
ZORB's final train error (from its logged curve, ``curve.train_error`` / ``curve.train_seconds``)
over ZORB's fit time, paired by seed; Adam's whole training time where it never reaches it.
Where the runs record test accuracy, every row also has the time to ZORB's test accuracy
(``time_to_accuracy``). A sweep of ZORB's solvers (``method=zorb_svd,zorb_qr,zorb_gram``) shows
each solver as its own row; the first of svd, qr, gram is the ZORB the others are measured against.

    records = read_sweep(client, "paper_a")            # the latest sweep of experiment=paper_a
    table = build_table(records)
    markdown(table), csv_rows(table)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

SOLVER_ORDER = ("svd", "qr", "gram")
METHOD_ORDER = ("zorb", *(f"zorb_{solver}" for solver in SOLVER_ORDER), "mlelm", "adam", "adam_converged", "logreg",
                "adam_ste", "adam_ste_identity")
METHOD_LABELS = {"zorb": "ZORB", **{f"zorb_{solver}": f"ZORB ({solver})" for solver in SOLVER_ORDER},
                 "mlelm": "ML-ELM", "adam": "Adam",
                 "adam_converged": "Adam to convergence (rate by validation, early stopping)",
                 "logreg": "logistic regression (scikit-learn)", "adam_ste": "Adam, straight-through estimator",
                 "adam_ste_identity": "Adam, identity straight-through estimator"}
DATASET_LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
METRICS = ("train_error", "test_error", "train_accuracy", "test_accuracy", "fit_seconds")
METRIC_LABELS = {"train_error": "train error", "test_error": "test error", "train_accuracy": "train accuracy",
                 "test_accuracy": "test accuracy", "fit_seconds": "fit time (s)"}
KEY_COLUMNS = (("dataset", "dataset"), ("network", "network"), ("m", "m (training samples)"))
DASH = "—"
PAPER_CHOICE = "test error (paper)"
VALIDATION_CHOICE = "validation error"


@dataclasses.dataclass
class RunRecord:
    """One finished job of a sweep, as the table needs it."""

    run_id: str
    dataset: str
    network: str
    m: str | None
    """``dataset.train_samples`` as the job set it (None: the dataset's whole training split)."""
    method: str
    learning_rate: float | None
    seed: int
    order: int
    """The job's number in the sweep (orders the table's cells as the sweep ran them)."""
    metrics: dict[str, float]
    curve: list[tuple[int, float, float]] | None = None
    """Adam's ``(step, training seconds, train error)``; None for other methods."""
    test_accuracy_curve: list[tuple[float, float]] | None = None
    """``(training seconds, test accuracy)`` where the run logged ``curve.test_accuracy``."""
    solver: str | None = None
    limits: dict[str, str] = dataclasses.field(default_factory=dict)
    """The runner's caps that were set (``limits.*`` params not null), e.g. under profile=smoke."""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def cell(self) -> tuple[str, str, str | None]:
        return self.dataset, self.network, self.m


@dataclasses.dataclass
class Summary:
    """Mean and standard deviation over seeds of one figure (None where no run has it)."""

    mean: float | None
    std: float | None
    count: int


@dataclasses.dataclass
class Row:
    cell: tuple[str, str, str | None]
    method: str
    learning_rate: float | None
    selected_by: list[str]
    seeds: list[int]
    figures: dict[str, Summary]
    speedup: Summary | None = None
    reached: int | None = None
    """Seeds in which Adam's curve reached ZORB's train error (of ``speedup.count`` paired seeds)."""
    time_to_accuracy: Summary | None = None
    """Over the seeds that reached ZORB's test accuracy (``time_to_accuracy``)."""
    accuracy_pairs: int = 0
    """Seeds paired with a ZORB run of the same cell (those that reached it: ``time_to_accuracy.count``)."""
    chosen_rates: list[float] = dataclasses.field(default_factory=list)
    """adam_converged: the learning rate each seed's validation chose."""


@dataclasses.dataclass
class Table:
    rows: list[Row]
    """Every (cell, method, learning rate) of the sweep, cells in sweep order."""
    key_columns: list[str]
    notes: list[str]
    title: str = ""

    def shown(self) -> list[Row]:
        """The paper-style rows: every method, Adam only at its chosen rate(s) where it has several
        (the paper's choice first)."""
        rows = [row for row in self.rows if row.method != "adam" or row.selected_by or _single_rate(self.rows, row)]
        cells = list(dict.fromkeys(row.cell for row in self.rows))
        return sorted(rows, key=lambda r: (cells.index(r.cell), _method_rank(r.method),
                                           PAPER_CHOICE not in r.selected_by, self.rows.index(r)))


def _single_rate(rows: Sequence[Row], row: Row) -> bool:
    return sum(1 for r in rows if r.cell == row.cell and r.method == row.method) == 1


def summarize(values: Iterable[float | None]) -> Summary:
    """Mean and population standard deviation (numpy's default, ddof=0) of the values present."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return Summary(None, None, 0)
    return Summary(statistics.fmean(present), statistics.pstdev(present), len(present))


def time_to_reach(curve: Sequence[tuple[int, float, float]], target: float) -> float | None:
    """Training seconds at the first curve point whose train error is ``<= target``, else None."""
    for _, seconds, error in curve:
        if error <= target:
            return seconds
    return None


def speedup(adam: RunRecord, zorb: RunRecord) -> tuple[float, bool]:
    """``(Adam's time to reach ZORB's train error, or its whole fit time) / ZORB's fit time``,
    and whether Adam reached it."""
    reached = time_to_reach(adam.curve or [], zorb.metrics["train_error"])
    seconds = adam.metrics["fit_seconds"] if reached is None else reached
    return seconds / zorb.metrics["fit_seconds"], reached is not None


def time_to_accuracy(run: RunRecord, zorb: RunRecord) -> float | None:
    """Seconds ``run`` needs to reach ``zorb``'s test accuracy, None if it never does: from its
    test-accuracy curve (training seconds at the first point at or above it) where it has one,
    else its fit time when its final test accuracy reaches it."""
    target = zorb.metrics.get("test_accuracy")
    if target is None:
        return None
    if run.test_accuracy_curve:
        return next((seconds for seconds, accuracy in run.test_accuracy_curve if accuracy >= target), None)
    accuracy = run.metrics.get("test_accuracy")
    return run.metrics.get("fit_seconds") if accuracy is not None and accuracy >= target else None


def reference_zorb(records: Sequence[RunRecord]) -> dict[tuple, RunRecord]:
    """``{(cell, seed): ZORB run}``: the runs other methods are measured against (``zorb``, else
    the first solver of ``SOLVER_ORDER`` the sweep ran)."""
    found: dict[tuple, RunRecord] = {}
    for method in METHOD_ORDER[:1 + len(SOLVER_ORDER)]:
        for r in records:
            if r.method == method:
                found.setdefault((r.cell, r.seed), r)
    return found


def by_solver(records: Sequence[RunRecord]) -> list[RunRecord]:
    """``records`` with ZORB's runs named ``zorb_<solver>`` where the sweep ran several solvers."""
    if len({r.solver for r in records if r.method == "zorb"}) < 2:
        return list(records)
    return [dataclasses.replace(r, method=f"zorb_{r.solver}") if r.method == "zorb" else r for r in records]


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def build_table(records: Sequence[RunRecord], *, title: str = "") -> Table:
    """The table of a sweep's finished runs (see the module docstring)."""
    if not records:
        raise ValueError("no finished runs to tabulate")
    records = by_solver(records)
    cells: dict[tuple, int] = {}
    for record in sorted(records, key=lambda r: r.order):
        cells.setdefault(record.cell, len(cells))
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for record in records:
        groups[(record.cell, record.method, record.learning_rate)].append(record)
    zorb_runs = reference_zorb(records)

    rows = []
    for (cell, method, rate), runs in groups.items():
        runs = sorted(runs, key=lambda r: r.seed)
        figures = {name: summarize(r.metrics.get(name) for r in runs) for name in METRICS + ("val_error",)}
        row = Row(cell=cell, method=method, learning_rate=rate, selected_by=[], seeds=[r.seed for r in runs],
                  figures=figures)
        if method in ("adam", "adam_converged"):
            pairs = [speedup(r, zorb_runs[(cell, r.seed)]) for r in runs
                     if (cell, r.seed) in zorb_runs and r.curve and zorb_runs[(cell, r.seed)].metrics.get("fit_seconds")]
            row.speedup = summarize(value for value, _ in pairs)
            row.reached = sum(1 for _, reached in pairs if reached)
        paired = [r for r in runs if (cell, r.seed) in zorb_runs and "test_accuracy" in zorb_runs[(cell, r.seed)].metrics]
        if paired:
            row.accuracy_pairs = len(paired)
            row.time_to_accuracy = summarize(time_to_accuracy(r, zorb_runs[(cell, r.seed)]) for r in paired)
        row.chosen_rates = [r.metrics["adam.learning_rate"] for r in runs if "adam.learning_rate" in r.metrics]
        rows.append(row)
    rows.sort(key=lambda r: (cells[r.cell], _method_rank(r.method), r.learning_rate or 0.0))

    notes = []
    validation_missing = []
    for cell in cells:
        adam = [r for r in rows if r.cell == cell and r.method == "adam"]
        if len(adam) < 2:
            continue
        min(adam, key=lambda r: r.figures["test_error"].mean).selected_by.append(PAPER_CHOICE)
        if all(r.figures["val_error"].mean is not None for r in adam):
            min(adam, key=lambda r: r.figures["val_error"].mean).selected_by.append(VALIDATION_CHOICE)
        else:
            validation_missing.append(cell)
    if validation_missing:
        notes.append(f"{len(validation_missing)} cell(s) have Adam runs without val_error (run them with "
                     f"validation_fraction > 0): only the paper's choice of learning rate is shown there.")

    key_columns = _key_columns(list(cells))
    limits = sorted({f"{k}={v}" for r in records for k, v in r.limits.items()})
    if limits:
        notes.append(f"These runs were shrunk by the runner's caps ({', '.join(limits)}; e.g. profile=smoke): "
                     f"not the paper's setting.")
    return Table(rows=rows, key_columns=key_columns, notes=notes, title=title)


def _key_columns(cells: list[tuple[str, str, str | None]]) -> list[str]:
    """The cell keys that tell cells apart; the dataset when none does."""
    varying = [name for index, (name, _) in enumerate(KEY_COLUMNS) if len({c[index] for c in cells}) > 1]
    if "dataset" in varying and "network" in varying and all(c[0] == c[1] for c in cells):
        varying.remove("network")  # each dataset with its own paper network
    return varying or ["dataset"]


def format_rate(rate: float | None) -> str:
    """``1e-3``, ``5e-4`` (one significant digit), else Python's shortest form."""
    if rate is None:
        return DASH
    mantissa, exponent = f"{rate:.0e}".split("e")
    if float(f"{mantissa}e{exponent}") == rate:
        return f"{mantissa}e{int(exponent)}"
    return f"{rate:g}"


def format_summary(summary: Summary | None, digits: int = 4) -> str:
    """``mean ± std`` (just the mean for one seed); ``—`` where no run has the figure."""
    if summary is None or summary.mean is None:
        return DASH
    if summary.count == 1:
        return f"{summary.mean:.{digits}g}"
    return f"{summary.mean:.{digits}g} ± {summary.std:.2g}"


def method_label(row: Row) -> str:
    label = METHOD_LABELS.get(row.method, row.method)
    if row.method == "adam" and row.selected_by:
        return f"{label}, rate by {' and by '.join(row.selected_by)}"
    return label


def _cell_values(table: Table, row: Row) -> list[str]:
    index = {name: i for i, (name, _) in enumerate(KEY_COLUMNS)}
    values = [DASH if row.cell[index[name]] is None else str(row.cell[index[name]]) for name in table.key_columns]
    return [DATASET_LABELS.get(value, value) if name == "dataset" else value
            for name, value in zip(table.key_columns, values)]


TIME_TO_ACCURACY = "time to ZORB's test accuracy (s)"
TIME_TO_ACCURACY_NOTE = (
    "Time to ZORB's test accuracy: the seconds a method needs until its test accuracy first reaches "
    "the test accuracy of ZORB with the same seed (where the sweep ran several solvers, the first of svd, "
    "qr, gram that it ran): "
    "for Adam, the training seconds at the first point of its test-accuracy curve at or above it "
    "(measured off the clock; the test set chooses nothing); for a method without a curve, its fit "
    "time if its final test accuracy reaches it. Mean ± std over the seeds that reached it; "
    "'(reached k/n)' counts them. Adam to convergence: its chosen rate's run alone, the search excluded.")


def _rate_text(row: Row) -> str:
    if row.chosen_rates:
        counts = {rate: row.chosen_rates.count(rate) for rate in sorted(set(row.chosen_rates), reverse=True)}
        return ", ".join(format_rate(rate) + (f" (x{count})" if len(counts) > 1 else "")
                         for rate, count in counts.items())
    return format_rate(row.learning_rate)


def _time_to_accuracy_text(row: Row) -> str:
    if not row.accuracy_pairs:
        return DASH
    reached = row.time_to_accuracy.count
    if not reached:
        return f"not reached (0/{row.accuracy_pairs})"
    return f"{format_summary(row.time_to_accuracy, 3)} (reached {reached}/{row.accuracy_pairs})"


def _speedup_text(row: Row) -> str:
    if row.speedup is None:
        return DASH
    if row.speedup.mean is None:
        return "no paired ZORB run"
    return f"{format_summary(row.speedup, 3)} (reached {row.reached}/{row.speedup.count})"


HEADER_NOTES = [
    "Each figure is the mean ± standard deviation (population, ddof=0) over the seeds in the "
    "'seeds' column; a single seed shows its value alone.",
    "Error: mean over samples of the Euclidean norm of the residual, in target units. Accuracy: "
    "argmax match (several outputs) or rounding (one output); '—' for a regression dataset, "
    "which has no accuracy.",
    "Fit time: wall time of the fit less compilation (Adam: its training steps only, its "
    "evaluations excluded). Float64.",
    "Adam at several learning rates is shown at two of them: the rate with the lowest mean test "
    "error (the paper's choice, which looks at the test set) and the rate with the lowest mean "
    "validation error (an honest choice: each run also fitted the method on the training set "
    "less a seeded share of it and scored that held-out share; every figure shown still comes "
    "from the fit on the whole training set). One row when both choose the same rate. All "
    "rates are in the table below the main one.",
    "Speed-up (Adam rows): Adam's training time to first reach ZORB's final train error of the "
    "same seed (read from Adam's train-error curve, so only as fine as its evaluation interval), "
    "or Adam's whole training time where it never does, over ZORB's fit time; '(reached k/n)' "
    "counts the seeds where Adam got there. '—' on other rows: the speed-up is defined for Adam.",
]


def markdown(table: Table) -> str:
    """The paper-style table, then every Adam learning rate with its selection figures, then notes."""
    lines = [f"# {table.title}", ""] if table.title else []
    columns = [label for name, label in KEY_COLUMNS if name in table.key_columns]
    accuracy_column = any(row.accuracy_pairs for row in table.rows)
    columns += ["method", "learning rate", "seeds"] + [METRIC_LABELS[m] for m in METRICS] + ["speed-up"]
    columns += [TIME_TO_ACCURACY] if accuracy_column else []
    lines += [_md_row(columns), _md_row(["---"] * len(columns))]
    for row in table.shown():
        values = _cell_values(table, row) + [method_label(row), _rate_text(row), str(len(row.seeds))]
        values += [format_summary(row.figures[m], 3 if m.endswith("seconds") else 4) for m in METRICS]
        values.append(_speedup_text(row))
        values += [_time_to_accuracy_text(row)] if accuracy_column else []
        lines.append(_md_row(values))

    several = [r for r in table.rows if r.method == "adam" and not _single_rate(table.rows, r)]
    if several:
        lines += ["", "Adam at every learning rate (the basis of the choices above):", ""]
        columns = [label for name, label in KEY_COLUMNS if name in table.key_columns]
        columns += ["learning rate", "seeds", "mean validation error", "mean test error", "chosen by", "speed-up"]
        lines += [_md_row(columns), _md_row(["---"] * len(columns))]
        for row in several:
            values = _cell_values(table, row) + [format_rate(row.learning_rate), str(len(row.seeds)),
                                                 format_summary(row.figures["val_error"]),
                                                 format_summary(row.figures["test_error"]),
                                                 ", ".join(row.selected_by) or DASH, _speedup_text(row)]
            lines.append(_md_row(values))
    notes = HEADER_NOTES + ([TIME_TO_ACCURACY_NOTE] if accuracy_column else []) + table.notes
    lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _md_row(values: Sequence[str]) -> str:
    return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"


def csv_text(table: Table) -> str:
    """Every (cell, method, learning rate) of the sweep with numeric columns; ``selected_by``
    names the choice(s) a rate won (Adam) and is empty otherwise."""
    out = io.StringIO()
    writer = csv.writer(out)
    header = list(table.key_columns) + ["method", "learning_rate", "selected_by", "seeds"]
    for metric in METRICS + ("val_error",):
        header += [f"{metric}_mean", f"{metric}_std"]
    header += ["speedup_mean", "speedup_std", "speedup_reached", "speedup_pairs", "time_to_accuracy_mean",
               "time_to_accuracy_std", "time_to_accuracy_reached", "time_to_accuracy_pairs", "chosen_rates"]
    writer.writerow(header)
    index = {name: i for i, (name, _) in enumerate(KEY_COLUMNS)}
    for row in table.rows:
        values: list[Any] = [row.cell[index[name]] if row.cell[index[name]] is not None else ""
                             for name in table.key_columns]
        values += [row.method, "" if row.learning_rate is None else repr(row.learning_rate),
                   "; ".join(row.selected_by), " ".join(map(str, row.seeds))]
        for metric in METRICS + ("val_error",):
            summary = row.figures[metric]
            values += ["" if summary.mean is None else repr(summary.mean),
                       "" if summary.std is None else repr(summary.std)]
        if row.speedup is None or row.speedup.mean is None:
            values += ["", "", "", ""]
        else:
            values += [repr(row.speedup.mean), repr(row.speedup.std), row.reached, row.speedup.count]
        summary = row.time_to_accuracy
        if summary is None or summary.mean is None:
            values += ["", "", 0 if row.accuracy_pairs else "", row.accuracy_pairs or ""]
        else:
            values += [repr(summary.mean), repr(summary.std), summary.count, row.accuracy_pairs]
        values.append(" ".join(map(repr, row.chosen_rates)))
        writer.writerow(values)
    return out.getvalue()


# --- reading a sweep back from MLflow ---------------------------------------------------

def _all_pages(search, *args, **kwargs) -> list:
    found, token = [], None
    while True:
        page = search(*args, max_results=1000, page_token=token, **kwargs)
        found.extend(page)
        token = page.token
        if not token:
            return found


def find_sweep(client, experiment: str, parent_run_id: str | None = None):
    """The sweep's parent run: ``parent_run_id`` if given, else the latest sweep run with
    ``experiment=<experiment>`` (tag ``zorb.experiment``) in any MLflow experiment."""
    if parent_run_id:
        return client.get_run(parent_run_id)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiment_ids, filter_string=f"tags.`zorb.experiment` = '{experiment}' and "
                                                            f"tags.`zorb.role` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError(f"no sweep of experiment={experiment} in this store: run "
                          f"`python run.py -m experiment={experiment}` first, or pass the store with --tracking-uri")
    return runs[0]


def _float(text: str | None) -> float | None:
    return None if text in (None, "", "null", "None") else float(text)


def _curve(client, run_id: str) -> tuple[list[tuple[int, float, float]] | None, list[tuple[float, float]] | None]:
    """The run's ``(step, seconds, train error)`` curve and ``(seconds, test accuracy)`` curve (None where absent)."""
    errors = {m.step: m.value for m in client.get_metric_history(run_id, "curve.train_error")}
    seconds = {m.step: m.value for m in client.get_metric_history(run_id, "curve.train_seconds")}
    accuracy = {m.step: m.value for m in client.get_metric_history(run_id, "curve.test_accuracy")}
    curve = [(step, seconds[step], errors[step]) for step in sorted(errors) if step in seconds] or None
    accuracy_curve = [(seconds[step], accuracy[step]) for step in sorted(accuracy) if step in seconds] or None
    return curve, accuracy_curve


def read_sweep(client, parent) -> tuple[list[RunRecord], dict[str, int]]:
    """The finished child runs of the sweep ``parent`` as records, and a count of its
    children per status."""
    children = _all_pages(client.search_runs, [parent.info.experiment_id],
                          filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    statuses: dict[str, int] = defaultdict(int)
    records = []
    for run in children:
        statuses[run.info.status] += 1
        if run.info.status != "FINISHED":
            continue
        params = run.data.params
        method = params["method.name"]
        if method == "adam" and params.get("method.gradient", "true").lower() != "true":
            method = f"adam_{params['method.gradient'].lower()}"  # a method of its own in the table
        limits = {key[len("limits."):]: value for key, value in params.items()
                  if key.startswith("limits.") and value not in ("null", "")}
        curve, accuracy_curve = _curve(client, run.info.run_id) if method.startswith("adam") else (None, None)
        records.append(RunRecord(
            run_id=run.info.run_id, dataset=params["dataset.name"], network=params["network.name"],
            m=None if params.get("dataset.train_samples") in (None, "null") else params["dataset.train_samples"],
            method=method,
            learning_rate=_float(params.get("method.learning_rate")) if method.startswith("adam") else None,
            seed=int(params["seed"]), order=int(run.data.tags.get("zorb.job_num", 0)),
            metrics=dict(run.data.metrics), curve=curve, test_accuracy_curve=accuracy_curve,
            limits=limits, tags=dict(run.data.tags), solver=params.get("solver.name")))
    return records, dict(statuses)


def sweep_notes(experiment: str, parent, statuses: dict[str, int], records: Sequence[RunRecord]) -> list[str]:
    """Where the table comes from: the sweep, its runs, the code and the machine."""
    from datetime import datetime, timezone

    started = datetime.fromtimestamp(parent.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ended = parent.info.end_time
    wall = f", {(ended - parent.info.start_time) / 60000:.1f} min wall time" if ended else ""
    counts = ", ".join(f"{count} {status.lower()}" for status, count in sorted(statuses.items()))
    tags = records[0].tags if records else {}
    commits = sorted({r.tags.get("git.commit", "unknown")[:12] + (" (dirty)" if r.tags.get("git.dirty") == "true"
                                                                   else "") for r in records})
    notes = [f"Source: MLflow sweep run {parent.info.run_id} of experiment={experiment}, started {started}"
             f"{wall}; its jobs: {counts}. Only finished runs are tabulated.",
             f"Code: git {', '.join(commits)}. Machine: {tags.get('machine.cpu', 'unknown CPU')}, "
             f"{tags.get('machine.cpus', '?')} cores; JAX {tags.get('jax.version', '?')} on "
             f"{tags.get('jax.backend', '?')}, {tags.get('dtype', '?')}; threads per job: "
             f"{', '.join(sorted({r.tags.get('zorb.kernels.threads', '?') for r in records}))}."]
    return notes
