"""``onlymine verify ORIGINALS PROTECTED``: the threat suite on a user's own files, a table and a JSON file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onlymine.evaluate import TRANSFORMS

DEFAULT_UNAUTHORIZED = ("efficientnet-lite:lite0", "efficientnet-lite:lite1", "efficientnet-lite:lite2",
                        "torchvision:mobilenet_v2")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="how other models read your protected files (the threat suite)",
                       description="Read each protected file as other people's code would: through each model's "
                                   "published pipeline, the whole frame stretched, five crops, JPEG 75/50, half "
                                   "size and a photo-sharing upload (PIL and torchvision only; onlymine.threats). "
                                   "Agreement = the model still predicts what it predicts on your original.")
    p.add_argument("originals", help="an original photo, or a folder of them")
    p.add_argument("protected", help="its protected copy, or a folder of them (matched by name, any suffix)")
    p.add_argument("--authorized", help="your authorized model spec (its prediction should be kept)")
    p.add_argument("--unauthorized", nargs="+", metavar="SPEC",
                   help=f"models that should be fooled (default: those of {', '.join(DEFAULT_UNAUTHORIZED)} "
                        "that load here, minus --authorized)")
    p.add_argument("--pipelines", nargs="+", default=list(TRANSFORMS), choices=list(TRANSFORMS))
    p.add_argument("--labels", help="CSV with columns file,label for accuracy beside agreement")
    p.add_argument("-o", "--out", default="verify.json", help="the JSON report (default verify.json)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _pairs(originals: Path, protected: Path) -> list:
    from onlymine.evaluate import Pair, pair_folders

    if originals.is_file() and protected.is_file():
        return [Pair(originals.name, originals, protected)]
    if originals.is_dir() and protected.is_dir():
        return pair_folders(originals, protected)
    raise ValueError(f"{originals} and {protected}: give two files or two folders")


def run(a: argparse.Namespace) -> int:
    from onlymine import report
    from onlymine.evaluate import evaluate_pairs, quality_summary, read_labels, threat_summary
    from onlymine.judges import ClassifierJudge
    from onlymine.models import LayerError, ModelError, spec_available

    try:
        pairs = _pairs(Path(a.originals), Path(a.protected))
        labels = read_labels(a.labels) if a.labels else None
        wanted = a.unauthorized or [s for s in DEFAULT_UNAUTHORIZED if spec_available(s)[0]]
        specs = ([a.authorized] if a.authorized else []) + [s for s in wanted if s != a.authorized]
        if not specs:
            raise ValueError("no model to judge with: name one with --unauthorized SPEC")
        judges = [ClassifierJudge(s, device=a.device) for s in specs]
        ev = evaluate_pairs(pairs, judges, authorized=a.authorized, labels=labels, transforms=a.pipelines,
                            progress=not a.no_progress, desc="verify")
    except (ModelError, LayerError, ValueError, OSError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    threats, q = threat_summary(ev), quality_summary(ev)
    width = max(len(j.name) for j in judges)
    print(f"{len(pairs)} file(s); PSNR {report.number(q['psnr'])} dB, SSIM {report.number(q['ssim'], 4)}; "
          "agreement with each model's own prediction on the original (%), per pipeline:")
    print(f"{'model':{width}s} {'role':12s} " + " ".join(f"{t:>8s}" for t in a.pipelines) + "    worst    mean")
    for t in threats:
        cells = " ".join(f"{report.percent(t['agreement'].get(p)):>8s}" for p in a.pipelines)
        print(f"{t['judge']:{width}s} {t['role']:12s} {cells} {report.percent(t['worst_agreement']):>8s} "
              f"{report.percent(t['mean_agreement']):>7s}")
    for j in judges:
        if not j.model.cfg.pretrained:
            print(f"note: {j.name} is NOT pretrained (random init); its numbers say nothing about real models")
    report.write_json(Path(a.out), {"originals": a.originals, "protected": a.protected, "pairs": len(pairs),
                                    "authorized": a.authorized, "pipelines": a.pipelines, "quality": q,
                                    "threats": threats, "predictions": ev.predictions, "images": ev.images})
    print(f"written: {a.out}")
    return 0
