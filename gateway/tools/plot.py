"""PNG plots of the routing curve (gateway/routing/curves.py) for `eval-router --plot` and
`calibrate --plot`.

matplotlib is an optional extra (`pip install .[plots]`): it is imported here, when a plot is
asked for, never by the gateway itself. The PNG's text chunks name the series drawn
(`Series`, JSON) and the marked threshold (`Threshold`), so a reader (or a test) can tell what
a file shows without looking at it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Curve = Sequence[tuple[float, float]]


class PlotError(RuntimeError):
    """A plot cannot be drawn (matplotlib missing, file not writable)."""


@dataclass(frozen=True, slots=True)
class Marker:
    """A point on one series: where the policy's current threshold sits."""

    series: str
    share: float
    recovered: float
    label: str


# Reference lines in grey, dashed; scorers in colour.
_REFERENCE = {"random", "prompt-length"}


def plot_curves(
    path: Path,
    series: Mapping[str, Curve],
    *,
    title: str,
    marker: Marker | None = None,
    xlabel: str = "share of requests sent to the cloud",
) -> list[str]:
    """Writes the PNG; returns the names of the series drawn, in legend order."""
    plt = _pyplot()
    names = [k for k, v in series.items() if v]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=80)
    try:
        for name in names:
            xs = [x for x, _ in series[name]]
            ys = [y for _, y in series[name]]
            style: dict[str, Any] = {}
            if name in _REFERENCE:
                style = {"linestyle": "--", "color": "0.55"}
            if name == "prompt-length":
                style = {"linestyle": ":", "color": "0.35"}
            ax.plot(xs, ys, label=name, linewidth=1.6, **style)
        if marker is not None:
            ax.plot([marker.share], [marker.recovered], "o", color="crimson", markersize=7)
            ax.annotate(
                marker.label,
                (marker.share, marker.recovered),
                textcoords="offset points",
                xytext=(8, -14),
                fontsize=8,
                color="crimson",
            )
        ax.set_xlim(0, 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of the strong model's gain recovered")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        metadata = {"Title": title, "Software": "edge-gateway", "Series": json.dumps(names)}
        if marker is not None:
            metadata["Threshold"] = json.dumps(
                {"series": marker.series, "share": round(marker.share, 4), "label": marker.label}
            )
        _save(fig, path, metadata)
    finally:
        plt.close(fig)
    return names


def plot_threshold_curves(
    path: Path,
    series: Mapping[str, Curve],
    *,
    title: str,
    threshold: float,
    label: str,
    dashed: Sequence[str] = (),
) -> list[str]:
    """Precision and recall against a similarity threshold (`eval-cache --plot`): a series
    named "precision ..." blue, "recall ..." orange, those in `dashed` dashed, the
    threshold a vertical line. Writes the PNG; returns the names of the series drawn."""
    plt = _pyplot()
    names = [k for k, v in series.items() if v]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=80)
    try:
        for name in names:
            color = "tab:blue" if name.startswith("precision") else "tab:orange"
            ax.plot(
                [x for x, _ in series[name]],
                [y for _, y in series[name]],
                label=name,
                linewidth=1.6,
                color=color,
                linestyle="--" if name in dashed else "-",
            )
        ax.axvline(threshold, color="crimson", linewidth=1.0, linestyle=":")
        ax.annotate(
            label, (threshold, 0.02), xytext=(4, 0), textcoords="offset points", color="crimson"
        )
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("cosine similarity threshold")
        ax.set_ylabel("precision / recall")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        metadata = {
            "Title": title,
            "Software": "edge-gateway",
            "Series": json.dumps(names),
            "Dashed": json.dumps([n for n in names if n in dashed]),
            "Threshold": json.dumps({"threshold": threshold, "label": label}),
        }
        _save(fig, path, metadata)
    finally:
        plt.close(fig)
    return names


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display, no GUI toolkit), or PlotError."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "--plot needs matplotlib: pip install 'edge-gateway[plots]' (or pip install matplotlib)"
        ) from None
    return plt


def _save(fig: Any, path: Path, metadata: dict[str, str]) -> None:
    """The PNG, with text chunks naming what it shows (a reader need not look at it)."""
    try:
        fig.savefig(path, format="png", metadata=metadata)
    except OSError as exc:
        raise PlotError(f"{path}: cannot write: {exc.strerror or exc}") from None
