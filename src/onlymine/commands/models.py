"""``onlymine models`` and ``onlymine layers SPEC``."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list known model specs and whether their weights are available here")
    p.add_argument("--kit", help="offline kit folder for kit: specs (default: $ONLYMINE_KIT)")
    p.set_defaults(func=run_models)
    q = sub.add_parser("layers", help="list the tappable layers of a model with their output shapes")
    q.add_argument("spec", help="model spec, e.g. torchvision:mobilenet_v2")
    q.add_argument("--all", action="store_true", help="every module, not only the main stages")
    q.set_defaults(func=run_layers)


def run_models(a: argparse.Namespace) -> int:
    from onlymine.faces.kit import set_kit_dir
    from onlymine.models import list_specs

    if a.kit:
        set_kit_dir(a.kit)
    width = 38
    print(f"{'spec':{width}s} {'weights':10s} detail")
    for row in list_specs():
        print(f"{row.spec:{width}s} {'available' if row.available else 'missing':10s} {row.description}; {row.detail}")
    print("\nAlso: any torchvision classifier as torchvision:NAME[:WEIGHTS|random], any timm classifier as "
          "timm:NAME[.TAG][:random], torchscript:PATH, onnx:PATH")
    return 0


def run_layers(a: argparse.Namespace) -> int:
    from onlymine.models import ModelError, load_model

    try:
        clf = load_model(a.spec)
    except ModelError as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    from onlymine.attacks.defaults import layers_for

    shapes = clf.layer_shapes()
    names = list(shapes) if a.all else clf.stages()
    chosen = set(layers_for("fmd", clf)) if clf.stages() else set()  # FMD's layer: measured, else mid-depth
    print(f"{clf.name}  input {clf.cfg.input_size}  pretrained={clf.cfg.pretrained}")
    for n in names:
        mark = "  <- default" if n in chosen else ""
        print(f"{n:48s} {str(shapes.get(n, '?')):24s}{mark}")
    return 0
