"""Ablation plots: the Pareto front of protection against PSNR, per-layer bars and one-axis sweeps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onlymine import report
from onlymine.ablation.analysis import feasible, pareto_front
from onlymine.ablation.runner import authorized_kept, protection

AXIS_LABELS = {"eps": "eps (/255)", "alpha": "alpha (/255)", "steps": "steps N", "lam": "lambda"}
AXIS_KEYS = {"eps": "eps_255", "alpha": "alpha_255", "steps": "steps", "lam": "lam"}


def pareto_plot(path: str | Path, rows: Sequence[dict[str, Any]], title: str = "",
                chosen: dict[str, Any] | None = None, min_authorized: float = 1.0) -> Path:
    """Every setting as a point (colour = the axis it varies; hollow = authorized prediction not always
    kept), the front of the feasible ones as a line, and the chosen setting as a star."""
    plt = report._plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    ok = {id(r) for r in feasible(rows, min_authorized)}
    for axis in dict.fromkeys(r["axis"] for r in rows):
        pts = [r for r in rows if r["axis"] == axis and r.get("psnr") is not None and math.isfinite(r["psnr"])
               and protection(r) is not None]
        for filled in (True, False):
            sel = [r for r in pts if (id(r) in ok) == filled]
            if sel:
                ax.scatter([r["psnr"] for r in sel], [100 * protection(r) for r in sel],  # type: ignore[operator]
                           label=("base point" if axis == "base" else f"varies {axis}")
                           + ("" if filled else " (authorized flipped)"),
                           facecolors=None if filled else "none", edgecolors=None if filled else "C7", s=28)
    front = pareto_front([r for r in rows if id(r) in ok])
    if front:
        ax.plot([r["psnr"] for r in front], [100 * protection(r) for r in front],  # type: ignore[operator]
                "k--o", lw=1, mfc="none", ms=9, label="Pareto front (authorized kept)")
    if chosen is not None:
        ax.scatter([chosen["psnr"]], [100 * protection(chosen)], marker="*", s=220, c="red",  # type: ignore[operator]
                   edgecolors="black", zorder=5, label="recommended")
    ax.set_xlabel("PSNR (dB), higher = less visible")
    ax.set_ylabel("unauthorized accuracy, average (%), lower = better protected")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return report._save(fig, path)


def layer_bars(path: str | Path, rows: Sequence[dict[str, Any]], unauthorized: Sequence[str], title: str = "") -> Path:
    """Per-layer bars: each unauthorized model's accuracy and the authorized agreement, PSNR on a 2nd axis."""
    plt = report._plt()
    rows = [r for r in rows if r["axis"] in ("layer", "base")]
    rows = sorted({r["layer"]: r for r in rows}.values(), key=lambda r: _layer_order(r["layer"]))
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(rows) * (len(unauthorized) + 1) + 2), 4.5))
    keys = [("authorized kept", authorized_kept)] + [
        (report.short_name(u), lambda r, u=u: _acc(r, u)) for u in unauthorized]
    width = 0.8 / len(keys)
    for k, (label, get) in enumerate(keys):
        xs = [i + k * width for i in range(len(rows))]
        ax.bar(xs, [100 * (get(r) or 0) for r in rows], width, label=label,
               hatch="//" if k == 0 else None, edgecolor="black" if k == 0 else None)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([r["layer"] for r in rows], rotation=60, fontsize=7)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax2 = ax.twinx()
    ax2.plot([i + 0.4 - width / 2 for i in range(len(rows))], [r["psnr"] for r in rows], "ko-", ms=3, label="PSNR")
    ax2.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax2.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return report._save(fig, path)


def sweep_plot(path: str | Path, rows: Sequence[dict[str, Any]], axis: str, unauthorized: Sequence[str],
               title: str = "") -> Path:
    """One axis varied around the base point: authorized agreement, each unauthorized accuracy and their
    average against the axis value (symmetric-log x for lambda, which includes 0), PSNR on a 2nd axis."""
    plt = report._plt()
    key = AXIS_KEYS[axis]
    sel = sorted({r[key]: r for r in rows if r["axis"] in (axis, "base")}.values(), key=lambda r: r[key])
    # the base row belongs to the sweep only if it shares the other parameters (it always does in ofat)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r[key] for r in sel]
    ax.plot(xs, [100 * (authorized_kept(r) or 0) for r in sel], "k-s", label="authorized kept")
    for u in unauthorized:
        ax.plot(xs, [100 * (_acc(r, u) or 0) for r in sel], "-o", ms=3, alpha=0.6, label=report.short_name(u))
    ax.plot(xs, [100 * (protection(r) or 0) for r in sel], "r-D", lw=2, label="unauthorized average")
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.set_ylabel("%")
    ax.set_ylim(-2, 105)
    if axis == "lam":
        pos = [x for x in xs if x > 0]
        ax.set_xscale("symlog", linthresh=min(pos) if pos else 1e-3)
    ax2 = ax.twinx()
    ax2.plot(xs, [r["psnr"] for r in sel], "b:", label="PSNR")
    ax2.set_ylabel("PSNR (dB)", color="b")
    ax.legend(fontsize=7, loc="center left")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return report._save(fig, path)


def _acc(r: dict[str, Any], spec: str) -> float | None:
    s = report.short_name(spec)
    v = r.get(f"{s}_accuracy")
    return v if v is not None else r.get(f"{s}_agreement")


def _layer_order(name: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.replace("_", ".").split("."))
