"""zorb.runner.tracking against a real SQLite MLflow store: writes that race with another
process's."""

from __future__ import annotations

import sqlite3

import numpy as np

from zorb.runner import tracking
from zorb.runner.tracking import dataset_spec


def test_two_jobs_logging_the_same_dataset_at_once_both_record_it(tmp_path):
    """MLflow looks a dataset up (experiment, name, digest) and inserts it when absent. Here a
    second job's insert of the same dataset lands between the first job's lookup and its
    insert, as when two jobs of a sweep start on the same data together (seen in
    ``experiment=paper_a``: the sweep failed on Sinc's data with "UNIQUE constraint failed"):
    the first job tries again, finds the row, and both runs have the input."""
    from mlflow.store.tracking.dbmodels.models import SqlDataset
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tracking.open_run(uri, "race", run_name="first", tags={})
    second = tracking.open_run(uri, "race", run_name="second", tags={})
    spec = dataset_spec("train", "d-train", "0123456789abcdef", {"loader": "test"}, np.zeros((5, 2)), np.zeros((5, 1)))
    raced = []

    def other_job_inserts_first(session, flush_context, instances):
        if not raced and any(isinstance(row, SqlDataset) for row in session.new):
            raced.append(True)
            second.log_datasets([spec])

    event.listen(Session, "before_flush", other_job_inserts_first)
    try:
        first.log_datasets([spec])
    finally:
        event.remove(Session, "before_flush", other_job_inserts_first)
    assert raced == [True]
    client = tracking.client(uri)
    for recorder in (first, second):
        inputs = client.get_run(recorder.run_id).inputs.dataset_inputs
        assert [(found.dataset.name, found.dataset.digest) for found in inputs] == [("d-train", "0123456789abcdef")]
        assert [(tag.key, tag.value) for tag in inputs[0].tags] == [("mlflow.data.context", "train")]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # one dataset row, which both inputs point to
        assert db.execute("SELECT name, digest FROM datasets").fetchall() == [("d-train", "0123456789abcdef")]
    for recorder in (first, second):
        recorder.terminate("FINISHED")
