"""The bench's plots, drawn with matplotlib from bench.json's content, as PNG and SVG.

- density: pool bytes per compressed byte, by corpus and allocator;
- sizes: the distribution of object sizes of each corpus, with the baseline's class
  boundaries;
- classes: utilisation (compressed bytes / pool bytes) of each populated class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, whatever the environment says

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

FORMATS = ("png", "svg")


def _save(fig: Figure, directory: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = directory / f"{name}.{fmt}"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _label(series: Mapping[str, Any]) -> str:
    return f"{series['corpus']['name']}\n{series['compressor']}"


def _allocators(all_series: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(a for s in all_series for a in s["fills"]))


def density(bench: Mapping[str, Any], directory: Path) -> list[Path]:
    series = bench["series"]
    names = _allocators(series)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(series), 4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(series))]
        ys = [s["fills"].get(name, {}).get("bytes_per_compressed_byte") or 0 for s in series]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(series))])
    ax.set_xticklabels([_label(s) for s in series])
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylabel("pool bytes per compressed byte")
    ax.set_title(f"Linux {bench['release']}: memory per compressed byte (lower is better)")
    ax.legend()
    return _save(fig, directory, "density")


def sizes(bench: Mapping[str, Any], directory: Path) -> list[Path]:
    series = bench["series"]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 2.4 * len(series)), squeeze=False)
    boundaries: list[int] = bench["class_sizes"].get(bench["baseline"]) or next(
        iter(bench["class_sizes"].values()), []
    )
    for ax, s in zip(axes[:, 0], series, strict=True):
        hist = {int(k): v for k, v in s["size_histogram"].items()}
        ax.bar(list(hist), list(hist.values()), width=28, align="edge")
        for b in boundaries:
            ax.axvline(b, color="grey", linewidth=0.2)
        ax.set_xlim(0, bench["page_size"] + 32)
        ax.set_ylabel("objects")
        ax.set_title(_label(s).replace("\n", ", "), fontsize=9)
    axes[-1, 0].set_xlabel(f"compressed size (bytes); grey: {bench['baseline']}'s class sizes")
    fig.tight_layout()
    return _save(fig, directory, "sizes")


def classes(bench: Mapping[str, Any], directory: Path) -> list[Path]:
    series = bench["series"]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 2.4 * len(series)), squeeze=False)
    page = bench["page_size"]
    for ax, s in zip(axes[:, 0], series, strict=True):
        for name, fill in s["fills"].items():
            rows = fill.get("classes") or []
            if rows:
                xs = [r["size"] for r in rows]
                ys = [r["compressed_bytes"] / (r["pages"] * page) for r in rows]
                ax.plot(xs, ys, marker=".", linewidth=0.8, label=name)
        ax.set_ylim(0, 1.05)
        ax.set_xlim(0, page + 32)
        ax.set_ylabel("utilisation")
        ax.set_title(_label(s).replace("\n", ", "), fontsize=9)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("class size (bytes)")
    fig.tight_layout()
    return _save(fig, directory, "classes")


def draw(bench: Mapping[str, Any], directory: Path) -> list[Path]:
    """Every plot of the bench into directory; the files written."""
    return [*density(bench, directory), *sizes(bench, directory), *classes(bench, directory)]
