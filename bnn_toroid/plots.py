"""Figures: local energy curves, error along paths, distance matrices (matplotlib; PNG, SVG or PDF)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLORS = {"sgd": "#1f77b4", "rsgd": "#2ca02c", "adv": "#d62728", "sam": "#9467bd"}


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


_LINES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def _styles(names):
    """Colour by method (the name's first word: ``sgd-0`` → sgd), and line style and
    marker by the name's rank within its method, so two seeds of one method differ."""
    out, rank = {}, {}
    for i, name in enumerate(names):
        key = str(name).split("-")[0].split(" ")[0].lower()
        k = rank[key] = rank.get(key, -1) + 1
        ls, marker = _LINES[k % len(_LINES)]
        out[name] = {"color": COLORS.get(key, f"C{i % 10}"), "linestyle": ls, "marker": marker}
    return out


def local_energy(ax, curves: dict, xlabel: str = "fraction of weights flipped ε"):
    """δE against ε (or σ) per network, mean ± std over draws."""
    styles = _styles(list(curves))
    for name, le in curves.items():
        x, m, s = np.asarray(le["x"]), np.asarray(le["mean"]), np.asarray(le["std"])
        st = styles[name]
        ax.plot(x, 100 * m, label=name, ms=3, **st)
        ax.fill_between(x, 100 * (m - s), 100 * (m + s), color=st["color"], alpha=0.15, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("local energy δE (train error rise, %)")
    ax.set_title("Flatness: error rise around each minimum")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def paths(ax, curves: dict, title: str = "Train error along paths"):
    """Train error (%) against the fraction of the path travelled."""
    for i, (name, c) in enumerate(curves.items()):
        ax.plot(np.asarray(c["fractions"]), 100 * np.asarray(c["errors"]), "-", color=f"C{i % 10}",
                label=f"{name} (barrier {100 * max(c['errors']):.1f}%)", lw=1.5)
    ax.set_xlabel("fraction of the path")
    ax.set_ylabel("train error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def distance_matrix(ax, matrix, labels, title: str = "Hamming distance (aligned)"):
    """A labelled heat map of pairwise distances."""
    m = np.asarray(matrix, dtype=float)
    im = ax.imshow(m, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] < 0.6 * np.nanmax(m) else "black")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


FIGURE_FORMATS = ("png", "svg", "pdf")


def figure_format(path) -> str:
    """The format a figure file's extension names (``.png``, ``.svg`` or ``.pdf``);
    anything else raises ``ValueError`` rather than writing one format under another's name."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FIGURE_FORMATS:
        raise ValueError(f"figure {path}: the extension {('.' + ext) if ext else '(none)'} names no "
                         f"format written here; expected one of {', '.join('.' + f for f in FIGURE_FORMATS)}")
    return ext


def save_figure(path, panels, ncols=3, size=(5.2, 4.2), suptitle=None):
    """Draw ``panels`` (callables taking an Axes) in a grid and write it atomically in the
    format the extension names (:func:`figure_format`)."""
    from ._files import atomic_write
    fmt = figure_format(path)
    plt = _plt()
    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax, draw in zip(axes.ravel(), panels):
        draw(ax)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110))
    plt.close(fig)
    return path
