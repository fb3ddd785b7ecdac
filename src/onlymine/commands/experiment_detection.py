"""``onlymine experiment detection``: flags, then :func:`onlymine.experiments.detection.run_detection`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onlymine.commands.cmdline import command_line, remember
from onlymine.settings import parse_budget


def register(sub: argparse._SubParsersAction) -> None:
    from onlymine.detection import DETECTORS
    from onlymine.experiments import detection as x

    p = sub.add_parser("detection", help="cross-task transfer: detectors as unauthorized models (Figure 2)",
                       description=x.__doc__.split("\n\n")[0] if x.__doc__ else None)
    p.add_argument("-o", "--out", required=True, help="output folder (protected files, results, report)")
    p.add_argument("--data", default=str((x.KIT / "photos").resolve()),
                   help="folder with detection/ and faces/ photo folders (default: the offline kit's photos)")
    p.add_argument("--models-dir", default=str((x.KIT / "models").resolve()),
                   help="folder with centernet/retinaface ONNX files (default: the kit's models/)")
    p.add_argument("--models", nargs="+", default=list(x.DEFAULT_MODELS), metavar="SPEC",
                   help="authorized ImageNet classifiers, each in turn (protects all photos)")
    p.add_argument("--face-models", nargs="*", default=[], metavar="SPEC",
                   help="authorized face recognisers (protect faces/ only; judged by the face detectors)")
    p.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    p.add_argument("--methods", nargs="+", default=list(x.DEFAULT_METHODS), choices=list(x.METHODS))
    p.add_argument("--limit", type=int, help="at most N photos per group (detection/, faces/)")
    p.add_argument("--eps", type=parse_budget, help="L-inf budget for every method (default 16/255)")
    p.add_argument("--alpha", type=parse_budget)
    p.add_argument("--steps", type=int)
    p.add_argument("--lam", type=float)
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a detection to count as found again")
    p.add_argument("--transforms", nargs="+", default=list(x.SUITE),
                   help=f"threat-suite pipelines (default: {' '.join(x.SUITE)}; onlymine.threats): detectors read the "
                        "whole frame their own way (crop), after the pipelines that change the file")
    p.add_argument("--markdown", help="also write the Markdown report here (e.g. docs/results-detection.md)")
    p.add_argument("--figure-dir", help="also copy the figures here (e.g. docs/img)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    remember(p)


def run(a: argparse.Namespace) -> int:
    from onlymine.experiments.detection import DetectionOptions, build_detector_judges, run_detection
    from onlymine.models import LayerError, ModelError

    judges, skipped = build_detector_judges(a.detectors, a.models_dir, a.iou)
    for s in skipped:
        print(f"skipped detector {s}", file=sys.stderr)
    if not judges:
        print("onlymine: no detector can run here", file=sys.stderr)
        return 2
    opts = DetectionOptions(out=Path(a.out), data=Path(a.data), models=a.models, face_models=a.face_models or (),
                            methods=a.methods, limit=a.limit, eps=a.eps, alpha=a.alpha, steps=a.steps, lam=a.lam,
                            iou=a.iou, transforms=a.transforms, markdown=Path(a.markdown) if a.markdown else None,
                            figure_dir=Path(a.figure_dir) if a.figure_dir else None, device=a.device,
                            batch_size=a.batch_size, progress=not a.no_progress)
    try:
        res = run_detection(opts, judges, skipped, command_line(a))
    except (ModelError, LayerError, ValueError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    for t in res.tables[:1]:
        print(t.markdown())
    print("written: " + ", ".join(str(f) for f in res.written))
    return 0
