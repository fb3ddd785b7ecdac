"""``onlymine experiment faces``: flags, then :func:`onlymine.experiments.faces.run_faces`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onlymine.commands.cmdline import command_line, remember
from onlymine.settings import parse_budget


def _names(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    from onlymine.experiments import faces as x

    p = sub.add_parser("faces", help="identity and emotion protection on the kit's face photos",
                       description=x.__doc__.splitlines()[0] if x.__doc__ else None)
    p.add_argument("-o", "--out", required=True, help="output folder (resumable)")
    p.add_argument("--kit", help="offline kit folder (default: $ONLYMINE_KIT)")
    p.add_argument("--photos", help="face photo folder with labels.csv (default: KIT/photos/faces)")
    p.add_argument("--tasks", default=",".join(x.TASKS))
    p.add_argument("--methods", default=",".join(x.DEFAULT_METHODS), help=f"comma list of {sorted(x.FACE_METHODS)}")
    p.add_argument("--recognisers", help=f"comma list (default: {','.join(x.RECOGNISERS)})")
    p.add_argument("--emotion-models", help=f"comma list (default: {','.join(x.EMOTION_MODELS)})")
    p.add_argument("--authorized", help="comma list: authorize only these of the recognisers / emotion models (the "
                                        "others stay judges and surrogates; default: each in turn)")
    p.add_argument("--eps", type=parse_budget, default=16 / 255)
    p.add_argument("--alpha", type=parse_budget, default=4 / 255)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--plus-steps", type=int, default=None, help="steps of the FMD+ methods (default: FMD+'s own)")
    p.add_argument("--lam", type=float, default=None, help="keep-term weight (default: the face models' 0.05)")
    p.add_argument("--layer-depth", type=float, default=None,
                   help="FMD feature layer at this relative depth (0-1) of each authorized model (default 0.4)")
    p.add_argument("--max-photos", type=int, default=None, help="first N photos only (quick runs)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--docs", help="also write this Markdown file (e.g. docs/results-faces.md) and its figures")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite report.md/html (and --docs) from OUTDIR/results.json without recomputing")
    p.set_defaults(func=run)
    remember(p)


def run(a: argparse.Namespace) -> int:
    from onlymine.experiments import faces as x
    from onlymine.models import ModelError

    opts = x.FaceOptions(
        out=Path(a.out), kit=Path(a.kit) if a.kit else None, photos=Path(a.photos) if a.photos else None,
        tasks=_names(a.tasks), methods=_names(a.methods), recognisers=_names(a.recognisers) or x.RECOGNISERS,
        emotion_models=_names(a.emotion_models) or x.EMOTION_MODELS, authorized=_names(a.authorized),
        eps=a.eps, alpha=a.alpha, steps=a.steps, plus_steps=a.plus_steps, lam=a.lam, layer_depth=a.layer_depth,
        max_photos=a.max_photos, batch_size=a.batch_size, device=a.device, docs=Path(a.docs) if a.docs else None,
        progress=not a.no_progress)
    try:
        res = x.run_faces(opts, command_line(a), report_only=a.report_only)
    except (ModelError, FileNotFoundError, ValueError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    print(f"{len(res['runs'])} runs, {len(res['predictions'])} face predictions; report: {a.out}/report.md")
    return 0
