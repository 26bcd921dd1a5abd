"""Evaluation plots written as PNG files: ROC curves, precision-recall curves, confusion.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so they render
with Agg whatever the session's backend, hold no global state and are freed when the
function returns. Sizes are exact: ``size`` inches times ``dpi`` pixels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

Curves = Mapping[str, tuple[ArrayLike, ArrayLike]]


def _figure(size: tuple[float, float], dpi: int) -> tuple[Figure, Axes]:
    """A figure of exactly ``size`` inches at ``dpi``, laid out so labels fit inside."""
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    return fig, fig.add_subplot()


def _plot_curves(
    ax: Axes,
    curves: Curves,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    legend_loc: str,
    **line_kwargs: Any,
) -> None:
    """Draws each (x, y) curve labelled by its key, on the unit square."""
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label, **line_kwargs)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc, fontsize="small")


def plot_roc(
    curves: Curves,
    path: str | os.PathLike,
    *,
    title: str = "ROC curve",
    size: tuple[float, float] = (5, 5),
    dpi: int = 100,
) -> None:
    """Writes ROC curves, ``{legend label: (fpr, tpr)}``, with the chance diagonal."""
    fig, ax = _figure(size, dpi)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    _plot_curves(
        ax,
        curves,
        xlabel="False positive rate (1 - specificity)",
        ylabel="True positive rate (sensitivity)",
        title=title,
        legend_loc="lower right",
    )
    fig.savefig(path)


def plot_pr(
    curves: Curves,
    path: str | os.PathLike,
    *,
    title: str = "Precision-recall curve",
    size: tuple[float, float] = (5, 5),
    dpi: int = 100,
) -> None:
    """Writes precision-recall curves, ``{legend label: (recall, precision)}``.

    Drawn as steps, the interpolation that average precision (PR-AUC) integrates.
    """
    fig, ax = _figure(size, dpi)
    _plot_curves(
        ax,
        curves,
        xlabel="Recall (sensitivity)",
        ylabel="Precision",
        title=title,
        legend_loc="lower left",
        drawstyle="steps-post",
    )
    fig.savefig(path)


def plot_confusion(
    matrix: ArrayLike,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "Confusion matrix",
    size: tuple[float, float] = (6, 5),
    dpi: int = 100,
) -> None:
    """Writes a confusion matrix (rows true, columns predicted), cells coloured by row %.

    Colouring by the row-normalised rate keeps a rare class's row readable next to a
    common one; each cell shows its count and that percentage.
    """
    counts = np.asarray(matrix)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, ax = _figure(size, dpi)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    for (row, col), count in np.ndenumerate(counts):
        ax.text(
            col,
            row,
            f"{count}\n{100 * rates[row, col]:.1f}%",
            ha="center",
            va="center",
            fontsize="small",
            color="white" if rates[row, col] > 0.5 else "black",
        )
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="Predicted class", ylabel="True class", title=title)
    fig.savefig(path)


def plot_runs(
    runs: Mapping[str, Mapping[str, tuple[ArrayLike, ArrayLike]]],
    path: str | os.PathLike,
    *,
    panel_size: tuple[float, float] = (4.5, 3.5),
    dpi: int = 100,
) -> None:
    """Writes one panel per metric, ``{metric: {run label: (steps, values)}}``, side by side.

    For comparing runs: the same metric of every run shares a panel and a colour per run.
    """
    fig = Figure(figsize=(panel_size[0] * len(runs), panel_size[1]), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    labels = list(dict.fromkeys(label for series in runs.values() for label in series))
    for ax, (metric, series) in zip(axes, runs.items(), strict=True):
        for label, (steps, values) in series.items():
            ax.plot(steps, values, marker=".", color=f"C{labels.index(label)}", label=label)
        ax.set(xlabel="step", title=metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.savefig(path)
