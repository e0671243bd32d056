"""Progress a person can watch: a line before each layer's solve, and tqdm bars (rate and
ETA) for long loops: Adam's steps, the chunks of a chunked fit, evaluation batches.

On a terminal a bar redraws itself in place once work has gone on for ``TTY_DELAY`` seconds.
Anywhere else (a log file, CI, SLURM) the same bar is written as a log line every
``LOG_INTERVAL`` seconds once work has gone on that long, and never as carriage returns.
The algorithm only calls the hooks made here (``zorb.fit``'s ``progress``, ``train_adam``'s
and ``predict``'s): it does no I/O itself.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from tqdm import tqdm

log = logging.getLogger("zorb.runner.progress")

TTY_DELAY = 1.0
LOG_INTERVAL = 30.0
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) in {elapsed}, {rate_fmt}, ETA {remaining}"


class _LogLines:
    """A file for tqdm that turns each redraw into one log line (no ``\\r``, no padding)."""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            log.info("%s", line)

    def flush(self) -> None:
        pass


def bar(total: int, description: str, unit: str) -> tqdm:
    """A tqdm bar over ``total`` ``unit``s: live on a terminal, periodic log lines elsewhere."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=description, unit=unit, delay=TTY_DELAY, leave=False, dynamic_ncols=True)
    return tqdm(total=total, desc=description, unit=unit, file=_LogLines(), delay=LOG_INTERVAL,
                mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, bar_format=LOG_FORMAT)


class Progress:
    """One run's progress display: ``fit`` is ``zorb.fit``'s ``progress`` hook (a line before
    each layer's solve and, for a fit that streams its rows in blocks, a bar over them);
    ``bar`` makes a bar for any other loop (Adam's steps, evaluation batches)."""

    def __init__(self):
        self.current: tqdm | None = None

    bar = staticmethod(bar)

    def fit(self, start) -> Callable[[int], None] | None:
        self.close()
        rows, cols = start.design_shape
        streamed = f", {start.blocks} blocks of rows x {start.passes} passes" if start.blocks > 1 else ""
        log.info("layer %d (%s): solving [A, 1] %d x %d with %s%s", start.index, start.kind, rows, cols,
                 start.solver, streamed)
        if start.blocks <= 1:
            return None
        self.current = bar(start.blocks * start.passes, f"layer {start.index}", "blocks")
        return self.current.update

    def close(self) -> None:
        """End the current fit's bar (the fit's last layer has no next one to end it)."""
        if self.current is not None:
            self.current.close()
            self.current = None
