"""``onlymine protect INPUT... -o OUTDIR``."""

from __future__ import annotations

import argparse
import json
import sys

from onlymine.attacks.fmd_plus import SCHEDULES
from onlymine.protect import Outcome, protect_paths
from onlymine.settings import DEFAULT_PRESET, PLUS_ONLY, PRESET_NAMES, ProtectSettings, parse_budget


def add_attack_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs an attack."""
    p.add_argument("--model", default="torchvision:mobilenet_v2", help="authorized model spec (see `onlymine models`)")
    p.add_argument("--layer", action="append", help="feature layer to distort (repeatable; see `onlymine layers`)")
    p.add_argument("--eps", type=parse_budget, help="L-inf budget: 16 (=16/255), 16/255 or 0.0627")
    p.add_argument("--alpha", type=parse_budget, help="step size, same units as --eps")
    p.add_argument("--steps", type=int, help="number of ascent steps")
    p.add_argument("--lam", type=float, help="weight of the keep term (default: measured per model)")
    p.add_argument("--preset", choices=list(PRESET_NAMES), default=DEFAULT_PRESET,
                   help=f"budget preset, overridden by explicit flags (default {DEFAULT_PRESET})")
    p.add_argument("--paper", action="store_true", help="the paper's exact procedure (eps 16, alpha 4, N 100, last iterate)")
    p.add_argument("--attack", choices=["fmd", "fmd+", "feature-only", "pgd", "uniform-noise"],
                   help=f"protection method (default {ProtectSettings.attack}; fmd+ is onlymine's, docs/beyond.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=8)
    plus = p.add_argument_group("FMD+ (--attack fmd+, docs/beyond.md)")
    plus.add_argument("--kappa", type=float, help="authorized logit margin the hinge keep term defends (default 2)")
    plus.add_argument("--momentum", type=float, help="MI-FGSM momentum decay, 0 disables (default 1)")
    plus.add_argument("--diversity", type=float, help="input-diversity probability per step, 0 disables (default 0.7)")
    plus.add_argument("--ti-kernel", type=int, help="translation-invariance Gaussian kernel size, 0 disables")
    plus.add_argument("--jpeg-prob", type=float, help="probability per step of a straight-through JPEG round trip")
    plus.add_argument("--texture", action=argparse.BooleanOptionalAction, default=None,
                      help="texture-masked budget: less perturbation on flat regions (higher PSNR)")
    plus.add_argument("--schedule", choices=SCHEDULES,
                      help="step size over the steps: constant alpha, or cosine decay from alpha to alpha/4")
    plus.add_argument("--importance", type=int, metavar="N",
                      help="FIA: weight the distortion by feature importance from N pixel-dropped copies per view "
                           "(0 = plain distortion, the default)")
    plus.add_argument("--linbp", type=float, metavar="FRACTION",
                      help="LinBP: backpropagate linearly through the ReLU/ReLU6 activations from this fraction of "
                           "their order on (0 = all; off by default; changes gradients only)")
    plus.add_argument("--views", type=int, metavar="N",
                      help="average each step over the image and N fresh random views in one batch (default 1: "
                           "one input-diversity view per step from a fixed bank)")
    plus.add_argument("--shuffle", type=int, metavar="BLOCKS",
                      help="BSR: the random views shuffle and rotate BLOCKS x BLOCKS blocks (0 = resize-and-pad)")
    plus.add_argument("--robust-keep", action=argparse.BooleanOptionalAction, default=None,
                      help="keep the authorized prediction after a JPEG round trip and halving too (keep term and "
                           "best-iterate rule; one more forward per step)")
    plus.add_argument("--surrogate", dest="surrogates", action="append", metavar="SPEC",
                      help="public model whose features are distorted too (repeatable); judge the protection only "
                           "on models that are not surrogates")
    speed = p.add_argument_group("speed (docs/performance.md)")
    speed.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=None,
                       help="stop an image once the authorized prediction is margin-safe and the distortion "
                            "plateaued (off with --paper)")
    speed.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                       help="autocast precision of the authorized model (auto: bf16 only on hardware with it)")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC memory layout (default on)")
    speed.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=None,
                       help="fold BatchNorm into convolutions, same function (default on)")
    speed.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the untapped stages (default off)")


def settings_from_args(a: argparse.Namespace) -> ProtectSettings:
    return ProtectSettings.build(
        preset=a.preset, paper=a.paper, model=a.model, attack=a.attack, layer=a.layer, eps=a.eps, alpha=a.alpha,
        steps=a.steps, lam=a.lam, seed=a.seed, fmt=getattr(a, "format", None), quality=getattr(a, "quality", None),
        retries=getattr(a, "retries", None), early_stop=getattr(a, "early_stop", None),
        precision=getattr(a, "precision", None), channels_last=getattr(a, "channels_last", None),
        fold_bn=getattr(a, "fold_bn", None), compile=getattr(a, "compile", None),
        **{k: getattr(a, k, None) for k in PLUS_ONLY})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protect", help="protect photos so only the authorized model reads them",
                       description="Protect image files and folders (recursive). Originals are never modified.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("-o", "--out", required=True, help="output folder (gets manifest.jsonl and config.json)")
    add_attack_options(p)
    p.add_argument("--format", choices=["png", "jpeg", "webp", "tiff"], default="png")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality")
    p.add_argument("--retries", type=int, default=2, help="re-optimisations if a saved file flips the prediction")
    p.add_argument("--resume", action="store_true", help="skip images already done with the same settings")
    p.add_argument("--max-pixels", type=int, default=None, help="reject larger images (decompression-bomb guard)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--faces", action="store_true",
                   help="face-aware: detect faces (MTCNN), protect each aligned face, paste back (onlymine.faces)")
    p.add_argument("--kit", help="offline kit folder for kit: model specs (default: $ONLYMINE_KIT)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(a)
    except (ValueError, TypeError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    if settings.fmt == "jpeg":
        print("warning: JPEG compression weakens the protection; PNG is recommended", file=sys.stderr)
    from onlymine.models import LayerError, ModelError

    def report(o: Outcome) -> None:
        if o.status in ("error", "failed"):
            print(f"{o.status}: {o.message}", file=sys.stderr)

    try:
        from onlymine.protect import Protector

        if getattr(a, "kit", None):
            from onlymine.faces.kit import set_kit_dir

            set_kit_dir(a.kit)
        if getattr(a, "faces", False):
            from onlymine.faces.protect import FaceProtector as Protector  # noqa: N814
        prot = Protector(settings, device=a.device)
    except (ModelError, LayerError, ValueError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    print("configuration: " + json.dumps(prot.settings.to_dict(), sort_keys=True))
    summary = protect_paths(a.inputs, a.out, settings, batch_size=a.batch_size, resume=a.resume,
                            max_pixels=a.max_pixels, progress=not a.no_progress, on_outcome=report, protector=prot)
    for o in summary.outcomes:
        if o.status in ("ok", "failed") and o.row:
            v = o.row["verified"]
            print(f"{o.status:6s} {o.path}  top1 {v['top1']} ({o.row.get('model_class')}) "
                  f"kept={v['kept']} linf={v['linf'] * 255:.1f}/255 psnr={v['psnr']:.2f}dB")
    n = {k: summary.count(k) for k in ("ok", "failed", "error", "skipped")}
    print(f"{n['ok']} protected, {n['failed']} failed verification, {n['error']} unreadable, "
          f"{n['skipped']} skipped (already done); manifest: {a.out}/manifest.jsonl")
    return 0 if summary.ok else 1
