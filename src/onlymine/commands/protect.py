"""``onlymine protect INPUT... -o OUTDIR``."""

from __future__ import annotations

import argparse
import json
import sys

from onlymine.commands.options import add_settings_options, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protect", help="protect photos so only the authorized model reads them", add_help=True,
                       description="Protect image files and folders (recursive). Originals are never modified; "
                                   "onlymine writes only into OUTDIR, and only files it created there.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("-o", "--out", required=True, help="output folder (gets manifest.jsonl and config.json)")
    add_settings_options(p)
    run = p.add_argument_group("run")
    run.add_argument("--resume", action="store_true", help="skip images already done with the same settings; "
                                                           "retry failed ones")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run.add_argument("--batch-size", type=int, default=8, help="photos per batch (default 8)")
    run.add_argument("--faces", action="store_true",
                     help="protect each detected face (MTCNN) inside the photo (onlymine.faces)")
    run.add_argument("--kit", help="offline kit folder for kit: model specs (default: $ONLYMINE_KIT)")
    run.add_argument("--ray", metavar="local|auto|ADDRESS",
                     help="protect on a Ray cluster: local starts one here, auto joins `ray start`'s, or its address")
    run.add_argument("--workers", type=int, default=1, help="Ray actors, each with its own model (and GPU if any)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--max-pixels", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_protect)


def _line(text: object) -> str:
    """One line whatever a file name holds (a newline in a name would break the one-line output)."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


def run_protect(a: argparse.Namespace) -> int:
    from onlymine.attacks.config import ConfigError
    from onlymine.models import LayerError, ModelError
    from onlymine.protect import Outcome, Protector, pick_device, protect_paths

    try:  # every setting is checked before any model loads
        settings = settings_from_args(a)
        if a.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {a.batch_size}")
        if a.max_pixels is not None and a.max_pixels < 1:
            raise ConfigError(f"--max-pixels must be at least 1, got {a.max_pixels}")
        if a.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {a.workers}")
        if a.ray and a.faces:
            raise ConfigError("--ray protects whole images; --faces runs locally")
        pick_device(a.device)
    except (ValueError, TypeError) as e:
        print(f"onlymine: {_line(e)}", file=sys.stderr)
        return 2
    if settings.output.fmt == "jpeg":
        print("warning: JPEG compression weakens the protection; PNG is recommended", file=sys.stderr)

    def report(o: Outcome) -> None:
        if o.status in ("error", "failed"):
            print(f"{o.status}: {_line(o.message)}", file=sys.stderr)

    def make() -> Protector:
        if a.kit:
            from onlymine.faces.kit import set_kit_dir

            set_kit_dir(a.kit)
        cls: type[Protector] = Protector
        if a.faces:
            from onlymine.faces.protect import FaceProtector as cls  # noqa: N813
        prot = cls(settings, device=a.device)
        print("configuration: " + json.dumps(prot.settings.to_dict(), sort_keys=True))
        return prot

    try:
        if a.ray:
            from onlymine.distributed import protect_ray

            summary = protect_ray(a.inputs, a.out, settings, address=a.ray, workers=a.workers,
                                  batch_size=a.batch_size, device=a.device, resume=a.resume, max_pixels=a.max_pixels,
                                  on_outcome=report, on_note=lambda n: print(_line(n), file=sys.stderr))
        else:
            summary = protect_paths(a.inputs, a.out, settings, batch_size=a.batch_size, resume=a.resume,
                                    max_pixels=a.max_pixels, progress=not a.no_progress, on_outcome=report,
                                    protector=make, on_note=lambda n: print(_line(n), file=sys.stderr))
    except (ModelError, LayerError, ValueError) as e:
        print(f"onlymine: {_line(e)}", file=sys.stderr)
        return 2
    for o in summary.outcomes:
        if o.status in ("ok", "failed") and o.row:
            v = o.row["verified"]
            print(f"{o.status:6s} {_line(o.path)}  top1 {v['top1']} ({o.row.get('model_class')}) "
                  f"kept={v['kept']} linf={v['linf'] * 255:.1f}/255 psnr={v['psnr']:.2f}dB")
    n = {k: summary.count(k) for k in ("ok", "failed", "skipped")}
    why = {r: sum(o.status == "error" and o.reason == r for o in summary.outcomes)
           for r in ("unreadable", "not written", "nothing to protect")}
    print(f"{n['ok']} protected, {n['failed']} failed verification, {why['unreadable']} unreadable, "
          f"{why['not written']} not written" + (f", {why['nothing to protect']} without a face"
                                                  if why["nothing to protect"] else "")
          + f", {n['skipped']} skipped (already done); manifest: {_line(a.out)}/manifest.jsonl")
    if summary.stopped:
        print(f"stopped: {_line(summary.stopped)}", file=sys.stderr)
    return 0 if summary.ok else 1
