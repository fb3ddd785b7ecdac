"""Top-1 softmax confidence of the authorized and unauthorized models on clean and protected images (the
paper's Figure 5): protection should leave the authorized model confident and make the others unsure."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from onlymine import report
from onlymine.judges import ClassifierJudge


def confidence_rows(items: Sequence[tuple[str, torch.Tensor, torch.Tensor]], judges: Sequence[ClassifierJudge],
                    authorized: str) -> list[dict[str, Any]]:
    """One row per (image, model, clean|protected): top-1 confidence (:meth:`ClassifierJudge.confidences`)."""
    rows: list[dict[str, Any]] = []
    names = [it[0] for it in items]
    for j in judges:
        for tag, imgs in (("clean", [it[1] for it in items]), ("protected", [it[2] for it in items])):
            for n, c in zip(names, j.confidences(imgs), strict=True):
                rows.append({"image": n, "model": j.name, "role": "authorized" if j.name == authorized
                             else "unauthorized", "version": tag, "confidence": float(c)})
    return rows


def confidence_figure(path: str | Path, rows: Sequence[dict[str, Any]], authorized: str, title: str = "") -> Path:
    """One panel per model (authorized first): histograms of top-1 confidence, clean against protected,
    with the medians marked."""
    plt = report._plt()
    models = sorted(dict.fromkeys(r["model"] for r in rows), key=lambda m: m != authorized)
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), squeeze=False, sharey=True)
    bins = [i / 20 for i in range(21)]
    for ax, m in zip(axes[0], models, strict=True):
        for tag, colour in (("clean", "C0"), ("protected", "C3")):
            v = [r["confidence"] for r in rows if r["model"] == m and r["version"] == tag]
            if not v:
                continue
            med = statistics.median(v)
            ax.hist(v, bins=bins, alpha=0.55, color=colour, label=f"{tag} (median {med:.2f})")
            ax.axvline(med, color=colour, ls="--", lw=1)
        role = "authorized" if m == authorized else "unauthorized"
        ax.set_title(f"{report.short_name(m)} ({role})", fontsize=9)
        ax.set_xlabel("top-1 softmax confidence")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("images")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return report._save(fig, path)
