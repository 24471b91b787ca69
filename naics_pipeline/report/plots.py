"""Small PNG plots for asset metadata (matplotlib, headless)."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str = "plot") -> str:
    """Markdown that the Dagster UI renders inline (data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def bar_chart(labels, series: dict[str, list[float]], title: str, ylabel: str, log: bool = False) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(series), 1)
    xs = range(len(labels))
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in xs], values, width=width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in xs], [str(label) for label in labels])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    return to_png(fig)


def line_chart(xs, series: dict[str, list[float]], title: str, xlabel: str, ylabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, ys in series.items():
        ax.plot(xs[: len(ys)], ys, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return to_png(fig)
