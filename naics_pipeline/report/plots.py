"""Small PNG plots for asset metadata (matplotlib, headless)."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str = "plot") -> str:
    """Markdown that the Dagster UI renders inline (data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _legend_outside(ax) -> None:
    """The legend right of the axes, where it covers no bar or line."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, frameon=False)


def _tick_labels(ax, positions, labels) -> None:
    """Short labels stay level; longer ones (or many) are rotated so that they never overlap."""
    labels = [str(label) for label in labels]
    long = max((len(label) for label in labels), default=0) * len(labels) > 48
    ax.set_xticks(positions, labels, rotation=30 if long else 0, ha="right" if long else "center",
                  rotation_mode="anchor" if long else "default")


def bar_chart(labels, series: dict[str, list[float]], title: str, ylabel: str, log: bool = False) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(series), 1)
    xs = range(len(labels))
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in xs], values, width=width, label=name)
    _tick_labels(ax, [x + width * (len(series) - 1) / 2 for x in xs], labels)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if len(series) > 1:
        _legend_outside(ax)
    return to_png(fig)


def line_chart(xs, series: dict[str, list[float]], title: str, xlabel: str, ylabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, ys in series.items():
        ax.plot(xs[: len(ys)], ys, label=name, marker="o" if len(ys) < 12 else None)
    if all(float(x).is_integer() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs: 1, 2, 3, not 1.25
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend_outside(ax)
    return to_png(fig)
