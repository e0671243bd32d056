"""zorb.runner.tables on made-up runs: means and deviations over seeds, Adam's rate chosen by test and
by validation error, the paper's speed-up paired by seed, every cell of the Markdown and CSV filled."""

from __future__ import annotations

import csv
import io
import statistics

import pytest

from zorb.runner import tables
from zorb.runner.tables import RunRecord


def record(method, seed, *, dataset="iris", m=None, rate=None, curve=None, order=0, **metrics):
    base = {"train_error": 0.1, "test_error": 0.2, "train_accuracy": 0.9, "test_accuracy": 0.8, "fit_seconds": 1.0}
    base.update(metrics)
    return RunRecord(run_id=f"{method}-{rate}-{seed}", dataset=dataset, network=dataset, m=m, method=method,
                     learning_rate=rate, seed=seed, order=order, metrics=base, curve=curve)


def test_summaries_are_mean_and_population_std_over_seeds():
    summary = tables.summarize([1.0, 2.0, 4.0, None])
    assert summary.count == 3
    assert summary.mean == pytest.approx(7 / 3) and summary.std == pytest.approx(statistics.pstdev([1, 2, 4]))
    assert tables.summarize([None]).mean is None
    assert tables.format_summary(summary) == "2.333 ± 1.2"
    assert tables.format_summary(tables.summarize([0.5])) == "0.5"
    assert tables.format_summary(tables.summarize([])) == "—"
    assert [tables.format_rate(r) for r in (1e-2, 5e-3, 1e-4, 2.5e-3, None)] == ["1e-2", "5e-3", "1e-4", "0.0025", "—"]


def test_speedup_is_time_to_reach_zorbs_train_error_over_zorbs_fit_time():
    zorb = record("zorb", 0, train_error=0.3, fit_seconds=0.5)
    curve = [(0, 0.0, 1.0), (50, 2.0, 0.4), (100, 4.0, 0.3), (150, 6.0, 0.2)]
    assert tables.speedup(record("adam", 0, rate=1e-3, curve=curve, fit_seconds=6.0), zorb) == (8.0, True)
    # never reached: Adam's whole training time counts, as in the paper
    never = [(0, 0.0, 1.0), (150, 6.0, 0.35)]
    assert tables.speedup(record("adam", 0, rate=1e-3, curve=never, fit_seconds=6.0), zorb) == (12.0, False)
    assert tables.time_to_reach(curve, 1.0) == 0.0


def sweep():
    """Two datasets x (zorb, mlelm, adam at three rates) x 3 seeds; the test error picks 1e-2 on
    iris, the validation error 1e-3; on boston both pick 5e-3."""
    runs, order = [], 0
    for dataset in ("iris", "boston"):
        for seed in range(3):
            runs.append(record("zorb", seed, dataset=dataset, train_error=0.1, fit_seconds=0.5, order=order))
            runs.append(record("mlelm", seed, dataset=dataset, order=order + 1))
            for rate, test, val in ((1e-2, 0.1, 0.5), (5e-3, 0.3, 0.4), (1e-3, 0.2, 0.3)):
                if dataset == "boston":
                    test, val = {5e-3: (0.05, 0.05)}.get(rate, (test, val))
                curve = [(0, 0.0, 1.0), (10, 1.0 + seed, 0.05 if rate == 1e-2 else 0.5)]
                runs.append(record("adam", seed, dataset=dataset, rate=rate, curve=curve, test_error=test,
                                   val_error=val, fit_seconds=1.0 + seed, order=order + 2))
            order += 10
    return runs


def test_adam_rate_chosen_by_test_error_and_by_validation_error():
    table = tables.build_table(sweep())
    assert table.key_columns == ["dataset"]
    shown = [(r.cell[0], r.method, r.learning_rate, r.selected_by) for r in table.shown()]
    assert shown == [
        ("iris", "zorb", None, []), ("iris", "mlelm", None, []),
        ("iris", "adam", 1e-2, [tables.PAPER_CHOICE]), ("iris", "adam", 1e-3, [tables.VALIDATION_CHOICE]),
        ("boston", "zorb", None, []), ("boston", "mlelm", None, []),
        ("boston", "adam", 5e-3, [tables.PAPER_CHOICE, tables.VALIDATION_CHOICE]),
    ]
    [chosen] = [r for r in table.rows if r.cell[0] == "iris" and r.learning_rate == 1e-2]
    # curve reaches ZORB's 0.1 at 1+seed seconds; ZORB fits in 0.5 s
    assert chosen.speedup.mean == pytest.approx(statistics.fmean([2, 4, 6])) and chosen.reached == 3
    [slow] = [r for r in table.rows if r.cell[0] == "iris" and r.learning_rate == 1e-3]
    assert slow.reached == 0 and slow.speedup.mean == pytest.approx(statistics.fmean([2, 4, 6]))
    assert chosen.seeds == [0, 1, 2] and chosen.figures["test_error"].mean == pytest.approx(0.1)


def test_markdown_and_csv_have_every_cell_filled():
    table = tables.build_table(sweep(), title="paper_a")
    text = tables.markdown(table)
    body = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(body) == 1 + 7 + 1 + 6  # header, shown rows, header of the rates table, its rows
    for line in body:
        assert all(cell.strip() for cell in line.strip("|").split("|")), line
    assert "rate by test error (paper) and by validation error" in text
    rows = list(csv.DictReader(io.StringIO(tables.csv_text(table))))
    assert len(rows) == len(table.rows) == 10
    adam = [r for r in rows if r["method"] == "adam" and r["dataset"] == "iris"]
    assert {r["learning_rate"]: r["selected_by"] for r in adam} == {
        "0.001": tables.VALIDATION_CHOICE, "0.005": "", "0.01": tables.PAPER_CHOICE}
    assert float(adam[0]["speedup_mean"]) > 0 and adam[0]["speedup_pairs"] == "3"


def test_regression_has_no_accuracy_and_one_rate_needs_no_choice():
    runs = [record("zorb", s, dataset="sinc", m="10", order=0) for s in range(2)]
    runs += [record("adam", s, dataset="sinc", m="10", rate=1e-3, order=1, curve=[(0, 0.0, 1.0)]) for s in range(2)]
    runs += [record("zorb", s, dataset="sinc", m="20", order=2) for s in range(2)]
    for run in runs:
        del run.metrics["train_accuracy"], run.metrics["test_accuracy"]
    table = tables.build_table(runs)
    assert table.key_columns == ["m"]
    assert [r.method for r in table.shown()] == ["zorb", "adam", "zorb"]
    assert all(not r.selected_by for r in table.rows)
    line = [ln for ln in tables.markdown(table).splitlines() if ln.startswith("| 10 | Adam")][0]
    assert "| — | — |" in line  # the two accuracies


def test_notes_say_when_runs_were_shrunk_or_lack_validation():
    runs = [record("adam", 0, rate=r, curve=[(0, 0.0, 1.0)]) for r in (1e-2, 1e-3)]
    runs[0].limits = {"width": "4"}
    notes = tables.build_table(runs).notes
    assert any("width=4" in note for note in notes)
    assert any("without val_error" in note for note in notes)


def test_any_sweep_is_grouped_by_its_swept_keys_but_seed():
    """zorb.runner.sweeps on a DataFrame shaped as mlflow.search_runs returns it: rows by
    (dataset, method) in job order, mean and population std over seeds, no accuracy for the
    regression dataset, so the figure shows the test error."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from zorb.runner import sweeps

    rows, job = [], 0
    for dataset in ("iris", "boston"):
        for method in ("zorb", "mlelm"):
            for seed in range(3):
                metrics = {"metrics.test_error": 0.1 * seed + (dataset == "boston") + 0.01 * (method == "mlelm"),
                           "metrics.train_error": 0.05, "metrics.fit_seconds": 1.0}
                if dataset == "iris":
                    metrics["metrics.test_accuracy"] = 0.9 - 0.01 * seed
                rows.append({"run_id": f"r{job}", "params.dataset.name": dataset, "params.method.name": method,
                             "params.seed": str(seed), "tags.zorb.job_num": str(job), **metrics})
                job += 1
    runs = pd.DataFrame(rows[::-1])  # newest first, as search_runs orders them
    runs = runs.sort_values("tags.zorb.job_num", key=lambda nums: nums.astype(int), ignore_index=True)
    parent = SimpleNamespace(info=SimpleNamespace(run_id="p", run_name="sweep x"),
                             data=SimpleNamespace(tags={sweeps.SWEPT_KEYS_TAG: "dataset,method,seed"}))
    table = sweeps.sweep_table(parent, runs)
    assert list(zip(table["dataset.name"], table["method.name"])) == [
        ("iris", "zorb"), ("iris", "mlelm"), ("boston", "zorb"), ("boston", "mlelm")]
    assert list(table["runs"]) == [3] * 4 and list(table["seeds"]) == ["0 1 2"] * 4
    errors = [1 + 0.01 + 0.1 * s for s in range(3)]
    assert table["test_error_mean"].iloc[3] == pytest.approx(np.mean(errors))
    assert table["test_error_std"].iloc[3] == pytest.approx(np.std(errors))
    assert table["test_accuracy_mean"].iloc[0] == pytest.approx(0.89)
    assert np.isnan(table["test_accuracy_mean"].iloc[2])
    assert sweeps.main_metric(table) == "test_error"
    text = sweeps.markdown(table, "sweep x")
    [boston] = [line for line in text.splitlines() if line.startswith("| boston | mlelm")]
    assert boston.count("—") == 1  # its test accuracy
    figure = sweeps.sweep_figure(parent, runs, table)
    assert [ax.get_xlabel() for ax in figure.axes] == ["dataset.name"]
    assert len(figure.axes[0].get_legend().get_texts()) == 2  # one line per method


def test_each_zorb_solver_is_a_row_and_every_method_has_its_time_to_zorbs_test_accuracy():
    """A sweep of ZORB's solvers beside Adam (a test-accuracy curve), Adam to convergence (its
    chosen rates) and logistic regression (no curve): svd is the ZORB they are measured against."""
    runs = []
    for seed in range(2):
        for solver, accuracy, seconds in (("svd", 0.80, 2.0), ("qr", 0.80, 1.0), ("gram", 0.79, 0.5)):
            run = record("zorb", seed, test_accuracy=accuracy, fit_seconds=seconds, order=0)
            run.solver = solver
            runs.append(run)
        adam = record("adam", seed, rate=1e-3, curve=[(0, 0.0, 1.0), (10, 3.0, 0.5), (20, 6.0, 0.1)], order=1)
        adam.test_accuracy_curve = [(0.0, 0.1), (3.0, 0.75), (6.0, 0.80 + 0.01 * seed)]
        runs.append(adam)
        converged = record("adam_converged", seed, curve=[(0, 0.0, 1.0), (10, 4.0, 0.2)], fit_seconds=12.0,
                           order=2, **{"adam.learning_rate": 1e-3 if seed == 0 else 3e-4})
        converged.test_accuracy_curve = [(0.0, 0.1), (4.0, 0.85)]
        runs.append(converged)
        runs.append(record("logreg", seed, test_accuracy=0.7 + 0.2 * seed, fit_seconds=9.0, order=3))
    table = tables.build_table(runs)
    rows = {row.method: row for row in table.shown()}
    assert list(rows) == ["zorb_svd", "zorb_qr", "zorb_gram", "adam", "adam_converged", "logreg"]
    assert rows["zorb_svd"].time_to_accuracy.mean == 2.0 and rows["zorb_qr"].time_to_accuracy.mean == 1.0
    assert rows["zorb_gram"].time_to_accuracy.count == 0 and rows["zorb_gram"].accuracy_pairs == 2
    assert rows["adam"].time_to_accuracy.mean == 6.0 and rows["adam"].time_to_accuracy.count == 2
    assert rows["adam_converged"].time_to_accuracy.mean == 4.0
    assert rows["logreg"].time_to_accuracy.mean == 9.0 and rows["logreg"].time_to_accuracy.count == 1
    # the speed-up pairs Adam with ZORB (svd): 6 s to reach its train error 0.1, over its 2 s
    assert rows["adam"].speedup.mean == pytest.approx(3.0)
    text = tables.markdown(table)
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| iris |")}
    assert lines["ZORB (gram)"].endswith("| not reached (0/2) |")
    assert lines["logistic regression (scikit-learn)"].endswith("| 9 (reached 1/2) |")
    assert "| 1e-3 (x1), 3e-4 (x1) |" in lines["Adam to convergence (rate by validation, early stopping)"]
    assert "Time to ZORB's test accuracy" in text
    [csv_row] = [r for r in csv.DictReader(io.StringIO(tables.csv_text(table))) if r["method"] == "adam_converged"]
    assert csv_row["time_to_accuracy_mean"] == "4.0" and csv_row["chosen_rates"] == "0.001 0.0003"


def test_one_zorb_solver_keeps_the_plain_zorb_row():
    runs = [record("zorb", 0), record("adam", 0, rate=1e-3, curve=[(0, 0.0, 1.0)])]
    runs[0].solver = "svd"
    assert [row.method for row in tables.build_table(runs).shown()] == ["zorb", "adam"]


def test_any_sweep_splits_zorb_by_solver_where_the_solver_varies():
    from types import SimpleNamespace

    import pandas as pd

    from zorb.runner import sweeps

    rows = [{"params.method.name": method, "params.solver.name": solver, "params.seed": str(seed),
             "metrics.test_accuracy": accuracy + 0.01 * seed, "tags.zorb.job_num": str(job)}
            for job, (method, solver, accuracy, seed) in enumerate(
                (m, s, a, seed) for seed in range(2)
                for m, s, a in (("zorb", "svd", 0.8), ("zorb", "gram", 0.7), ("adam", "qr", 0.6)))]
    parent = SimpleNamespace(info=SimpleNamespace(run_id="p", run_name="sweep"),
                             data=SimpleNamespace(tags={sweeps.SWEPT_KEYS_TAG: "method,seed"}))
    table = sweeps.sweep_table(parent, pd.DataFrame(rows))
    assert list(zip(table["method.name"], table["solver.name"], table["runs"])) == [
        ("zorb", "svd", 2), ("zorb", "gram", 2), ("adam", "qr", 2)]
    assert table["test_accuracy_mean"].tolist() == pytest.approx([0.805, 0.705, 0.605])
    one_solver = pd.DataFrame([row for row in rows if row["params.solver.name"] != "gram"])
    one_solver["params.solver.name"] = "qr"
    assert "solver.name" not in sweeps.sweep_table(parent, one_solver).columns
