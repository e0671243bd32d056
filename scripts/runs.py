"""Close the MLflow runs whose process died (zorb/runner/lifecycle.py).

    python scripts/runs.py reap                 # every experiment of the store
    python scripts/runs.py reap --dry-run       # say what would be closed (reads a read-only store)
    python scripts/runs.py reap --experiment zorb --stale-minutes 30 --tracking-uri sqlite:////x/mlflow.db

A RUNNING run of this host whose process is gone becomes KILLED; one of another host whose
heartbeat (refreshed every minute while it runs) is older than --stale-minutes becomes
FAILED. Each gets the tag zorb.reaped saying why. The store is --tracking-uri, else
$MLFLOW_TRACKING_URI, else the project's mlflow.db, as for run.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a file (python scripts/runs.py), the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zorb.errors import ZorbError  # noqa: E402
from zorb.runner import lifecycle, store, tracking  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reap = commands.add_parser("reap", help="close RUNNING runs whose process is gone")
    reap.add_argument("--dry-run", action="store_true", help="only print what would be closed")
    reap.add_argument("--experiment", action="append", help="experiment name (repeatable; default: all)")
    reap.add_argument("--stale-minutes", type=float, default=lifecycle.STALE_SECONDS / 60,
                      help="other hosts' runs without a heartbeat for this long are FAILED (default: %(default)g)")
    reap.add_argument("--tracking-uri", default=None, help="MLflow store (default: as run.py)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uri = store.resolve(args.tracking_uri)
    try:
        if args.dry_run:
            client = store.read_client(uri)
        else:
            store.check(uri, write=True)
            client = tracking.client(uri)
        experiments = client.search_experiments()
        if args.experiment:
            experiments = [e for e in experiments if e.name in args.experiment]
            missing = sorted(set(args.experiment) - {e.name for e in experiments})
            if missing:
                raise ZorbError(f"{uri} has no experiment {missing[0]!r}")
    except ZorbError as error:
        print(error, file=sys.stderr)
        return 1
    verdicts = lifecycle.reap(client, [e.experiment_id for e in experiments], dry_run=args.dry_run,
                              timeout=args.stale_minutes * 60)
    verb = "would mark" if args.dry_run else "marked"
    for verdict in verdicts:
        print(f"{verdict.run_id} ({verdict.run_name}): {verb} {verdict.status}, {verdict.reason}")
    print(f"{len(verdicts)} run(s) {verb}" if verdicts else "no RUNNING run has lost its process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
