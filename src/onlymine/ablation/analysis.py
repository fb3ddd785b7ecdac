"""Reading ablation rows: the Pareto front of protection against image quality, and the recommended setting.

A setting is *feasible* when the authorized model keeps its prediction on at least ``min_authorized`` of the
saved files. Among feasible settings, one is on the Pareto front when no other feasible setting has both a
PSNR at least as high and an unauthorized score at least as low (one of them strictly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from onlymine.ablation.runner import authorized_kept, protection


def feasible(rows: Sequence[dict[str, Any]], min_authorized: float = 1.0) -> list[dict[str, Any]]:
    """Rows whose authorized agreement on the saved files is at least ``min_authorized``."""
    return [r for r in rows if (authorized_kept(r) or 0) >= min_authorized - 1e-9 and protection(r) is not None
            and r.get("psnr") is not None and math.isfinite(r["psnr"])]


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The non-dominated rows (higher PSNR, lower unauthorized score), sorted by PSNR."""
    pts = [r for r in rows if protection(r) is not None and r.get("psnr") is not None and math.isfinite(r["psnr"])]
    front = []
    for r in pts:
        dominated = any(o is not r and o["psnr"] >= r["psnr"]
                        and protection(o) <= protection(r)  # type: ignore[operator]
                        and (o["psnr"] > r["psnr"] or protection(o) < protection(r))  # type: ignore[operator]
                        for o in pts)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r["psnr"])


def front_gap(row: dict[str, Any], front: Sequence[dict[str, Any]]) -> float:
    """How far ``row`` is above the front: its unauthorized score minus the best front score among front
    points with at least its PSNR (0 on the front; in fractions, x100 for percentage points)."""
    better = [protection(f) for f in front if f["psnr"] >= row["psnr"] - 1e-9]
    if not better:
        return 0.0
    return max(0.0, float(protection(row)) - min(b for b in better if b is not None))  # type: ignore[arg-type]


def recommend(rows: Sequence[dict[str, Any]], base_eps_255: float | None = None, min_authorized: float = 1.0,
              min_psnr: float | None = None, tolerance: float = 0.0) -> dict[str, Any] | None:
    """The recommended setting: among feasible rows (at the base budget ``base_eps_255`` when given, and with
    PSNR >= ``min_psnr`` when given), the lowest unauthorized score; among rows within ``tolerance`` of it,
    the highest PSNR. ``None`` when no row qualifies."""
    cand = feasible(rows, min_authorized)
    if base_eps_255 is not None:
        cand = [r for r in cand if abs(r["eps_255"] - base_eps_255) < 1e-6]
    if min_psnr is not None:
        cand = [r for r in cand if r["psnr"] >= min_psnr]
    if not cand:
        return None
    best = min(protection(r) for r in cand)  # type: ignore[type-var]
    near = [r for r in cand if protection(r) <= best + tolerance + 1e-12]  # type: ignore[operator]
    return max(near, key=lambda r: (r["psnr"], -r["steps"]))
