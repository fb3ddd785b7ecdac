"""Figures: detections drawn on clean and protected images (like the paper's Figure 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from onlymine.detection.detections import Detections

COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


def draw(ax: object, image: torch.Tensor, dets: Detections, threshold: float, title: str = "") -> None:
    """Show ``image`` on a matplotlib axis with the detections >= ``threshold`` as labelled rectangles."""
    from matplotlib.patches import Rectangle

    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())  # type: ignore[attr-defined]
    d = dets.above(threshold)
    for (x1, y1, x2, y2), s, name, k in zip(d.boxes.tolist(), d.scores.tolist(), d.label_names(),
                                           d.labels.tolist(), strict=True):
        c = COLORS[k % len(COLORS)]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, ec=c))  # type: ignore[attr-defined]
        ax.text(x1, y1, f"{name} {s:.2f}", color="white", fontsize=6, va="bottom",  # type: ignore[attr-defined]
                bbox={"facecolor": c, "alpha": 0.8, "pad": 1, "lw": 0})
    ax.set_title(title, fontsize=8)  # type: ignore[attr-defined]
    ax.axis("off")  # type: ignore[attr-defined]


def comparison_figure(path: str | Path,
                      rows: Sequence[tuple[str, float, Sequence[tuple[str, torch.Tensor, Detections]]]],
                      title: str = "") -> Path:
    """One line per (row label, threshold, [(column title, image, detections), ...]) -> PNG at ``path``."""
    from onlymine import report

    plt = report._plt()
    ncol = max(len(cols) for _, _, cols in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(3.6 * ncol, 3.0 * len(rows)), squeeze=False)
    for line, (label, thr, cols) in zip(axes, rows, strict=True):
        for ax, (t, im, d) in zip(line, cols, strict=False):
            draw(ax, im, d, thr, f"{label}: {t} ({len(d.above(thr))} >= {thr:g})")
        for ax in line[len(cols):]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return report._save(fig, path)
