"""Figures of a fit, drawn off-screen (matplotlib's Agg canvas, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _panels(count: int, title: str | None):
    columns = min(3, max(1, count))
    rows = math.ceil(max(1, count) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows + (0.4 if title else 0)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure, axes


def ridge_figure(layers: Sequence, *, title: str | None = "ridge=auto: GCV per layer") -> Figure:
    """One log-log panel per layer whose ridge was chosen: GCV against the ridge values tried
    (``ridge_grid``, ``ridge_score``), the chosen ``ridge`` marked."""
    figure, axes = _panels(len(layers), title)
    for ax, report in zip(axes, layers):
        grid, score = np.asarray(report.ridge_grid), np.asarray(report.ridge_score)
        finite = np.isfinite(score)
        ax.loglog(grid[finite], score[finite], lw=1.2, color="C0", label="GCV")
        ax.axvline(report.ridge, color="C3", ls="--", lw=1, label=f"chosen {report.ridge:.3g}")
        ax.set_title(f"layer {report.index} ({report.kind})", fontsize=9)
        ax.set_xlabel("ridge")
        ax.set_ylabel("GCV")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    return figure


def spectra_figure(layers: Sequence, *, title: str | None = None) -> Figure:
    """One log-scale panel per solved layer: the singular values of its design matrix
    ``[A, 1]`` (descending), the cut-off ``u_rcond * s_max`` dashed and the kept rank marked.

    ``layers`` are ``zorb.LayerReport``s (index, kind, design_shape, spectrum, cutoff, rank,
    u_rcond). Exact zeros cannot be drawn on a log axis; their count is noted instead.
    """
    figure, axes = _panels(len(layers), title)
    for ax, report in zip(axes, layers):
        spectrum = np.asarray(report.spectrum, dtype=np.float64)
        position = np.arange(1, spectrum.size + 1)
        positive = spectrum > 0
        ax.semilogy(position[positive], spectrum[positive], lw=1.2, color="C0", label="singular values")
        if report.cutoff > 0:
            ax.axhline(report.cutoff, color="C3", ls="--", lw=1,
                       label=f"cut-off {report.u_rcond:g} x s_max")
        if 0 < report.rank < spectrum.size:
            ax.axvline(report.rank + 0.5, color="C2", ls=":", lw=1, label=f"rank {report.rank}")
        rows_, cols_ = report.design_shape
        zeros = int((~positive).sum())
        note = f", {zeros} zero" if zeros else ""
        ax.set_title(f"layer {report.index} ({report.kind}): [A, 1] {rows_} x {cols_}\n"
                     f"rank {report.rank}/{spectrum.size}, cond {report.cond:.3g}{note}", fontsize=9)
        ax.set_xlabel("index")
        ax.set_ylabel("singular value")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return figure
