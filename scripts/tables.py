"""Tables from a sweep's MLflow runs, as Markdown and CSV (zorb/runner/tables.py, zorb/runner/sweeps.py).

    python scripts/tables.py --sweep latest           # the latest sweep, whatever it swept: table and figure
    python scripts/tables.py --parent-run-id <id>     # that sweep
    python scripts/tables.py paper_a                  # the latest sweep of experiment=paper_a, in the paper's layout
    python scripts/tables.py                          # every paper experiment with a sweep in the store
    python scripts/tables.py paper_c --parent-run-id <id> --out-dir results --tracking-uri sqlite:////x/mlflow.db

Any sweep: rows grouped by the keys it swept other than seed, mean ± std over seeds, written as
<out-dir>/sweep_<parent run id>.md, .csv and .png (the main metric against each swept key, one
line per method). A paper experiment (experiments/<name>.yaml): <out-dir>/<experiment>.md and
.csv in the paper's layout. Every file is also logged (tables/) on the sweep's parent run.
Logging needs a writable store: a store on a read-only mount is only read, and its tables
are written to <out-dir> alone. The store is --tracking-uri, else $MLFLOW_TRACKING_URI, else the project's mlflow.db, as for run.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a file (python scripts/tables.py), the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zorb.errors import ZorbError  # noqa: E402
from zorb.runner import store, sweeps, tables, tracking  # noqa: E402
from zorb.runner.experiments import EXPERIMENTS_DIR  # noqa: E402


def write_table(client, experiment: str, out_dir: Path, parent_run_id: str | None = None,
                log_artifacts: bool = True) -> list[Path]:
    """Build ``experiment``'s paper table from its sweep; returns the files written."""
    parent = tables.find_sweep(client, experiment, parent_run_id)
    records, statuses = tables.read_sweep(client, parent)
    if not records:
        raise LookupError(f"sweep run {parent.info.run_id} of experiment={experiment} has no finished runs")
    datasets = ", ".join(dict.fromkeys(tables.DATASET_LABELS.get(r.dataset, r.dataset) for r in records))
    table = tables.build_table(records, title=f"{experiment} ({datasets}): mean ± std over seeds")
    table.notes = tables.sweep_notes(experiment, parent, statuses, records) + table.notes
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{experiment}.md", out_dir / f"{experiment}.csv"]
    paths[0].write_text(tables.markdown(table))
    paths[1].write_text(tables.csv_text(table))
    if log_artifacts:
        for path in paths:
            tracking.retrying(client.log_artifact, parent.info.run_id, str(path), "tables")
    return paths


def write_sweep(uri: str, client, parent_run_id: str | None, out_dir: Path, log_artifacts: bool) -> list[Path]:
    """Any sweep's table and figure (the latest sweep when ``parent_run_id`` is None)."""
    if parent_run_id is None:
        parent = sweeps.latest_sweep(client)
    else:
        from mlflow.exceptions import MlflowException

        try:
            parent = client.get_run(parent_run_id)
        except MlflowException:
            raise LookupError(f"no run {parent_run_id} in {uri}: pass a sweep's parent run id "
                              f"(its tag zorb.role is 'sweep')") from None
    if log_artifacts:
        return sweeps.log_sweep_summary(uri, parent.info.run_id, out_dir)
    return sweeps.write_sweep_summary(uri, parent, out_dir)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="*", metavar="experiment",
                        help="paper experiments (experiments/<name>.yaml); default: every one with a sweep")
    parser.add_argument("--sweep", choices=["latest"], default=None,
                        help="tabulate the latest sweep, whatever it swept")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: as run.py)")
    parser.add_argument("--parent-run-id", default=None,
                        help="the sweep's parent run (with one experiment: its paper table; alone: any sweep)")
    parser.add_argument("--out-dir", type=Path, default=Path("tables"), help="where to write (default: tables/)")
    parser.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    args = parser.parse_args(argv)
    if args.sweep and (args.experiments or args.parent_run_id):
        parser.error("--sweep latest takes no experiment and no --parent-run-id")
    if args.parent_run_id and len(args.experiments) > 1:
        parser.error("--parent-run-id takes at most one experiment")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uri = store.resolve(args.tracking_uri)
    try:
        client = store.read_client(uri)  # creates nothing: a store on a read-only mount is read
    except ZorbError as error:
        print(error, file=sys.stderr)
        return 1
    log_artifacts = not args.no_log and store.writable(uri)
    if not args.no_log and not log_artifacts:
        print(f"{uri} cannot be written: the tables are not logged to the sweep runs")
    if args.sweep or (args.parent_run_id and not args.experiments):
        try:
            paths = write_sweep(uri, client, args.parent_run_id, args.out_dir, log_artifacts)
        except LookupError as error:
            print(error, file=sys.stderr)
            return 1
        print(f"sweep: {', '.join(map(str, paths))}")
        return 0
    names = args.experiments or sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    written = 0
    for name in names:
        try:
            paths = write_table(client, name, args.out_dir, args.parent_run_id, log_artifacts)
        except LookupError as error:
            if args.experiments:
                print(error, file=sys.stderr)
                return 1
            print(f"{name}: skipped ({error})")
            continue
        written += 1
        print(f"{name}: {', '.join(map(str, paths))}")
    if not written:
        print("no table written: no experiment has a sweep in this store", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
