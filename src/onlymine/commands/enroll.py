"""``onlymine enroll FOLDER -o GALLERY_DIR``: enroll identities for identity protection."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="build face galleries (one per recogniser) from FOLDER/<identity>/*.jpg",
                       description="Enroll identities: each photo's largest face is aligned the way each "
                                   "recogniser expects and embedded; protect with --model gallery:OUT/<file>.npz")
    p.add_argument("folder", help="folder with one sub-folder of photos per identity")
    p.add_argument("-o", "--out", required=True, help="output folder for the gallery files")
    p.add_argument("--recogniser", action="append",
                   help="recogniser spec (repeatable; default: the kit's three recognisers)")
    p.add_argument("--kit", help="the offline kit folder for kit: specs (default: $ONLYMINE_KIT)")
    p.add_argument("--scale", type=float, default=30.0, help="cosine-logit scale of the identity classifier")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from onlymine.faces.enroll import DEFAULT_RECOGNISERS, enroll, folder_samples, save_galleries
    from onlymine.faces.kit import set_kit_dir
    from onlymine.models import ModelError

    if a.kit:
        set_kit_dir(a.kit)
    try:
        samples = folder_samples(a.folder)
        galleries, problems = enroll(samples, a.recogniser or DEFAULT_RECOGNISERS, scale=a.scale)
    except (FileNotFoundError, ModelError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    for path, g in zip(save_galleries(galleries, a.out), galleries.values(), strict=True):
        print(f"{path}: {len(g.labels)} faces, {len(g.identities)} identities ({g.recogniser})")
    return 0 if galleries and not problems else 1
