"""Figures of a fit, drawn off-screen (matplotlib's Agg canvas, no display needed)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator


def _panels(count: int, title: str | None):
    """A grid of up to 3 panels a row, with fixed margins (inches) for two-line titles and the
    axis labels: a layout engine (constrained, tight) triples the drawing time, which a sweep
    of small runs pays once per run."""
    columns = min(3, max(1, count))
    rows = math.ceil(max(1, count) / columns)
    width, height = 4.2 * columns, 3.2 * rows + (0.4 if title else 0)
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    figure.subplots_adjust(left=0.8 / width, right=1 - 0.15 / width, bottom=0.5 / height,
                           top=1 - (0.55 + (0.4 if title else 0)) / height, wspace=0.35, hspace=0.75)
    for ax in axes[count:]:
        ax.set_visible(False)
    for ax in axes[:count]:
        # the axis labels at fixed places: placed by matplotlib, each draw measures every tick
        # label of the panel (and its neighbours) first, most of a small figure's drawing time
        ax.xaxis.set_label_coords(0.5, -0.14)
        ax.yaxis.set_label_coords(-0.19, 0.5)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure, axes


def _title(ax, text: str) -> None:
    """A panel's title at a fixed height (``y`` given: not moved clear of the tick labels, which
    costs a measure of each at every draw; no tick label sits above a panel here)."""
    ax.set_title(text, fontsize=9, y=1.0)


def _decade(value: float, _position=None) -> str:
    """A decade's tick label: ``1``, ``1e3``, ``1e-12``."""
    if value <= 0:
        return ""
    exponent = round(math.log10(value))
    return "1" if exponent == 0 else f"1e{exponent}"


def _log_ticks(ax, *axis_names: str) -> None:
    """Decades only on a log axis: matplotlib's minor ticks (8 a decade) are most of a small
    figure's drawing time."""
    for name in axis_names:
        axis = getattr(ax, f"{name}axis")
        axis.set_major_locator(LogLocator(numticks=7))
        axis.set_major_formatter(FuncFormatter(_decade))  # plain text (1e-5), no TeX to lay out
        axis.set_minor_locator(NullLocator())


def ridge_figure(layers: Sequence, *, title: str | None = "ridge=auto: GCV per layer") -> Figure:
    """One log-log panel per layer whose ridge was chosen: GCV against the ridge values tried
    (``ridge_grid``, ``ridge_score``), the chosen ``ridge`` marked."""
    figure, axes = _panels(len(layers), title)
    for ax, report in zip(axes, layers):
        grid, score = np.asarray(report.ridge_grid), np.asarray(report.ridge_score)
        finite = np.isfinite(score)
        ax.loglog(grid[finite], score[finite], lw=1.2, color="C0", label="GCV")
        _log_ticks(ax, "x", "y")
        ax.axvline(report.ridge, color="C3", ls="--", lw=1, label=f"chosen {report.ridge:.3g}")
        _title(ax, f"layer {report.index} ({report.kind})")
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
        _log_ticks(ax, "y")
        if report.cutoff > 0:
            ax.axhline(report.cutoff, color="C3", ls="--", lw=1,
                       label=f"cut-off {report.u_rcond:g} x s_max")
        if 0 < report.rank < spectrum.size:
            ax.axvline(report.rank + 0.5, color="C2", ls=":", lw=1, label=f"rank {report.rank}")
        rows_, cols_ = report.design_shape
        zeros = int((~positive).sum())
        note = f", {zeros} zero" if zeros else ""
        _title(ax, f"layer {report.index} ({report.kind}): [A, 1] {rows_} x {cols_}\n"
                   f"rank {report.rank}/{spectrum.size}, cond {report.cond:.3g}{note}")
        ax.set_xlabel("index")
        ax.set_ylabel("singular value")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return figure


def draw_spectra(folder: Path, title: str | None = None) -> None:
    """Draw ``spectra.png`` (``spectra_figure``) and, for layers whose ridge was chosen,
    ``ridge_gcv.png`` (``ridge_figure``) into a run's ``spectra/`` folder, from what it holds:
    ``summary.json`` (one entry per solved layer) and ``layer{i}.npy`` (its spectrum)."""
    layers = [SimpleNamespace(**{**entry, "cond": float(entry["cond"]),
                                 "spectrum": np.load(folder / f"layer{entry['index']}.npy", allow_pickle=False)})
              for entry in json.loads((folder / "summary.json").read_text())]
    if layers:
        spectra_figure(layers, title=title).savefig(folder / "spectra.png", dpi=110)
    chosen = [SimpleNamespace(**{**vars(layer), "ridge_score": np.asarray(layer.ridge_score, dtype=np.float64)})
              for layer in layers if "ridge_grid" in vars(layer)]
    if chosen:
        ridge_figure(chosen).savefig(folder / "ridge_gcv.png", dpi=110)


def metric_against_keys(runs, metric: str, keys: Sequence[str], *, line: str, title: str | None = None) -> Figure:
    """One panel per key of ``keys``: the mean of column ``metric`` of ``runs`` (a pandas
    DataFrame, one row per run) at each value of the key, one line per value of column
    ``line``, the standard deviation (ddof=0) as error bars. Numeric keys are drawn on a
    number axis (logarithmic when they span more than two decades), others in sweep order."""
    import pandas as pd

    figure = Figure(figsize=(4.6 * len(keys), 3.6 + (0.4 if title else 0)), layout="constrained")
    FigureCanvasAgg(figure)
    for ax, key in zip(figure.subplots(1, len(keys), squeeze=False).ravel(), keys):
        numbers = pd.to_numeric(runs[key], errors="coerce")
        numeric = bool(numbers.notna().all())
        order = sorted(numbers.unique()) if numeric else list(dict.fromkeys(runs[key]))
        for name, group in runs.groupby(line, sort=False):
            stats = group.groupby(numbers.loc[group.index] if numeric else group[key])[metric].agg(
                ["mean", lambda values: values.std(ddof=0)])
            stats = stats.reindex([v for v in order if v in stats.index])
            x = stats.index.to_numpy(dtype=float) if numeric else [order.index(v) for v in stats.index]
            ax.errorbar(x, stats["mean"], yerr=stats.iloc[:, 1], marker="o", capsize=3, label=str(name))
        if numeric and min(order) > 0 and max(order) / min(order) > 100:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(order)), [str(v) for v in order], rotation=30 if len(order) > 4 else 0)
        ax.set_xlabel(key)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(True, alpha=0.3)
        ax.legend(title=line, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
