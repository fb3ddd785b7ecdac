"""``onlymine experiment imagenet``: flags, then :func:`onlymine.experiments.imagenet.run_imagenet`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onlymine.commands.cmdline import command_line, remember
from onlymine.settings import parse_budget


def register(sub: argparse._SubParsersAction) -> None:
    from onlymine.experiments import imagenet as x

    p = sub.add_parser("imagenet", help="the paper's ImageNet table: each model authorized in turn",
                       description=x.__doc__.split("\n\n")[0] if x.__doc__ else None)
    p.add_argument("-o", "--out", required=True, help="output folder (protected files, results, report.html)")
    p.add_argument("--data", default=str(x.KIT_IMAGENET.resolve()),
                   help="folder of photos (default: the offline kit's imagenet photos, if present)")
    p.add_argument("--labels", help="CSV file,label (default: DATA/labels.csv when it exists)")
    p.add_argument("--models", nargs="+", default=list(x.DEFAULT_MODELS), metavar="SPEC",
                   help="model specs, each authorized in turn (e.g. torchvision:vgg16 torchvision:resnet18)")
    p.add_argument("--authorized", nargs="+", metavar="SPEC",
                   help="only these of --models are authorized in turn (default: every one); all of them judge")
    p.add_argument("--methods", nargs="+", default=list(x.DEFAULT_METHODS), choices=list(x.METHODS))
    p.add_argument("--subset", choices=list(x.SUBSETS), default="all",
                   help="which photos to use: foolbox_* (true labels), aib_* (consensus labels) or all")
    p.add_argument("--split", choices=["all", "tune", "test", "fresh"], default="all",
                   help="kit photos used for tuning (foolbox_* and the first 10 aib_*), the rest (test), or the "
                        "test photos after the 16 of the old held-out split (fresh; their reports have informed "
                        "decisions since, so not strictly held out; default: all)")
    p.add_argument("--limit", type=int, help="use at most N photos (taken in turn from foolbox and aib)")
    p.add_argument("--seed", type=int, nargs="+", metavar="SEED",
                   help="random-start / transform seed of every method (default 0); several: each protecting "
                        "method once per seed, rows KEY-seedN")
    p.add_argument("--eps", type=parse_budget, help="L-inf budget for every method (default: each method's own)")
    p.add_argument("--alpha", type=parse_budget, help="step size for the gradient methods")
    p.add_argument("--steps", type=int, help="steps for the gradient methods (paper: 100)")
    p.add_argument("--lam", type=float, help="FMD keep-term weight (default: measured per model)")
    p.add_argument("--transforms", nargs="+",
                   help="threat-suite pipelines the files are judged through (default: all; onlymine.threats)")
    p.add_argument("--results", metavar="DIR",
                   help="where results.json/csv and report.html/md go (default: OUT; another folder lets a second "
                        "report share OUT's protected cells)")
    p.add_argument("--report-only", action="store_true",
                   help="protect nothing: report the methods whose every cell an earlier run finished in OUT")
    p.add_argument("--markdown", help="also write the Markdown report here (e.g. docs/results-imagenet.md)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    remember(p)


def run(a: argparse.Namespace) -> int:
    from onlymine.experiments.imagenet import ImagenetOptions, build_protocol, run_imagenet
    from onlymine.models import LayerError, ModelError
    from onlymine.report import percent

    opts = ImagenetOptions(out=Path(a.out), data=Path(a.data), labels=Path(a.labels) if a.labels else None,
                           models=a.models, authorized=a.authorized, methods=a.methods, subset=a.subset, split=a.split,
                           limit=a.limit, seeds=a.seed, eps=a.eps, alpha=a.alpha, steps=a.steps, lam=a.lam,
                           transforms=a.transforms, device=a.device, batch_size=a.batch_size,
                           progress=not a.no_progress, report_only=a.report_only)
    try:
        proto = build_protocol(opts)
        for spec in proto.authorized:
            if not proto.load_model(spec).cfg.pretrained:
                print(f"note: {spec} is NOT pretrained (random init): smoke run only, numbers mean nothing")
        print(f"{len(proto.files)} photos, {len(proto.judges)} models ({len(proto.authorized)} authorized in turn), "
              "methods: "
              + ", ".join(m.key for m in proto.methods))
        _, results = run_imagenet(proto, command_line(a), a.markdown, a.results)
    except (ModelError, LayerError, ValueError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    for o in results["overview"]["all/restricted"]:
        print(f"{o['label']:26s} authorized {percent(o['authorized_mean']):>6s}%  "
              f"unauthorized {percent(o['unauthorized_mean']):>6s}%  n={o['n']}")
    for c in results["checks"]:
        print(f"{'holds' if c['holds'] else 'FAILS'}: {c['claim']} ({c['evidence']})")
    print(f"written: {a.results or proto.out}/report.html, report.md, results.json, results.csv"
          + (f", {a.markdown}" if a.markdown else ""))
    return 0
