"""The threat-suite table of protected cells (folders with ``evaluation.json`` and ``manifest.jsonl``, as
``onlymine ablate`` and ``onlymine experiment`` leave them), for a run whose own report was not written, e.g.
an ablation stopped before its last setting.

    python benchmarks/cell_table.py runs/speed-tune/speed-tune/settings > /tmp/table.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onlymine.evaluate import Evaluation, quality_summary, summarize


def cell_row(folder: Path) -> str:
    ev = Evaluation.from_dict(json.loads((folder / "evaluation.json").read_text()))
    auth = ev.meta["authorized"]
    per: dict[str, list[float]] = {}
    kept = {}
    for r in summarize(ev):
        if r["judge"] == auth:
            kept[r["transform"]] = r["agreement"]
        elif r["agreement"] is not None:
            per.setdefault(r["transform"], []).append(r["agreement"])
    agree = {t: 100 * sum(v) / len(v) for t, v in per.items()}
    worst = max(agree, key=lambda t: agree[t])
    q = quality_summary(ev)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    latest = {r["input"]: r for r in rows}.values()
    sec = sum(float(r.get("seconds") or 0) for r in latest) / max(1, len(latest))
    return (f"| {folder.name} | {q['n']} | {agree['crop']:.1f} | {agree['full']:.1f} | {agree['jpeg75']:.1f} | "
            f"{agree[worst]:.1f} ({worst}) | {sum(agree.values()) / len(agree):.1f} | {100 * kept['crop']:.0f} / "
            f"{100 * kept['full']:.0f} | {q['psnr']:.2f} | {q['ssim']:.3f} | {q['haarpsi']:.3f} | "
            f"{q['ring_ratio']:.2f} | {sec:.2f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="folder whose sub-folders are cells")
    a = p.parse_args(argv)
    cells = sorted(d for d in a.root.iterdir() if (d / "evaluation.json").exists() and (d / "manifest.jsonl").exists())
    print("| cell | photos | crop | full | jpeg75 | worst pipeline | mean | authorized kept crop / full | PSNR | SSIM "
          "| HaarPSI | ring | s/img |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cells:
        print(cell_row(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
