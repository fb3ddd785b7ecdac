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

from onlymine.evaluate import Evaluation
from onlymine.experiments.threat_report import suite_row


def cell_row(folder: Path) -> str:
    ev = Evaluation.from_dict(json.loads((folder / "evaluation.json").read_text()))
    r = suite_row(ev, ev.meta["authorized"])
    agree, kept = {t: 100 * v for t, v in r["unauthorized"].items()}, r["authorized_kept"]
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    latest = {row["input"]: row for row in rows}.values()
    sec = sum(float(row.get("seconds") or 0) for row in latest) / max(1, len(latest))
    return (f"| {folder.name} | {r['n']} | {agree['crop']:.1f} | {agree['full']:.1f} | {agree['jpeg75']:.1f} | "
            f"{100 * r['worst']:.1f} ({r['worst_pipeline']}) | {100 * r['mean']:.1f} | {100 * kept['crop']:.0f} / "
            f"{100 * kept['full']:.0f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['haarpsi']:.3f} | "
            f"{r['ring_ratio']:.2f} | {sec:.2f} |")


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
