"""``onlymine evaluate --clean DIR --protected DIR --authorized SPEC --unauthorized SPEC... -o OUTDIR``."""

from __future__ import annotations

import argparse
import sys

from onlymine.evaluate import TRANSFORMS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score protected files: accuracy, agreement, quality, robustness",
                       description="Compare protected files with their originals: every model's top-1 accuracy "
                                   "(with --labels) and agreement with its own clean prediction, per-image "
                                   "PSNR/SSIM/HaarPSI/L-inf/L2/LPIPS and the ring ratio, with every model "
                                   "reading the saved 8-bit files through the threat suite (onlymine.threats: "
                                   "its own crop, the whole frame, five crops, JPEG 75/50, half size, an upload).")
    p.add_argument("--clean", required=True, help="folder of original images")
    p.add_argument("--protected", required=True, help="folder of protected files (matched by name, any suffix)")
    p.add_argument("--authorized", required=True, help="authorized model spec")
    p.add_argument("--unauthorized", nargs="+", default=[], metavar="SPEC", help="unauthorized model specs")
    p.add_argument("--labels", help="CSV with columns file,label (label -1: no label)")
    p.add_argument("--pipelines", "--transforms", dest="transforms", nargs="+", default=list(TRANSFORMS),
                   choices=list(TRANSFORMS), help="threat-suite pipelines (default: all; onlymine.threats)")
    p.add_argument("-o", "--out", required=True, help="output folder: per_image.csv, predictions.csv, summary.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from onlymine.evaluate import evaluate_folders, read_labels
    from onlymine.judges import ClassifierJudge
    from onlymine.models import LayerError, ModelError
    from onlymine.report import number, percent

    try:
        labels = read_labels(a.labels) if a.labels else None
        specs = [a.authorized] + [s for s in a.unauthorized if s != a.authorized]
        judges = [ClassifierJudge(s, device=a.device) for s in specs]
        summary = evaluate_folders(a.clean, a.protected, judges, a.out, authorized=a.authorized, labels=labels,
                                   transforms=a.transforms, progress=not a.no_progress)
    except (ModelError, LayerError, ValueError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    for j in judges:
        if not j.model.cfg.pretrained:
            print(f"note: {j.name} is NOT pretrained (random init); its numbers mean nothing about real models")
    q = summary["quality"]
    print(f"{summary['n_pairs']} image pairs; PSNR {number(q['psnr'])} dB, SSIM {number(q['ssim'], 4)}, "
          f"L-inf {number(None if q['linf_max'] is None else q['linf_max'] * 255, 1)}/255, "
          f"LPIPS {number(q['lpips'], 4) if q['lpips'] is not None else 'unavailable (' + summary['lpips'] + ')'}")
    print(f"{'transform':10s} {'model':32s} {'role':12s} {'accuracy%':>9s} {'clean acc%':>10s} {'agree%':>7s}")
    for r in summary["models"]:
        print(f"{r['transform']:10s} {r['judge']:32s} {r['role']:12s} {percent(r['accuracy']):>9s} "
              f"{percent(r['clean_accuracy']):>10s} {percent(r['agreement']):>7s}")
    print(f"written: {a.out}/summary.json, per_image.csv, predictions.csv")
    return 0
