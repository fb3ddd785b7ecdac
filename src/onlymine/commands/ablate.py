"""``onlymine ablate CONFIG.yaml... -o OUTDIR``: sweep layer, eps, alpha, steps and lam (see onlymine.ablation)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from onlymine.commands.cmdline import command_line, remember


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="ablations over layer/eps/alpha/steps/lam: Pareto front, sweeps, Grad-CAM",
                       description="Run each YAML config's settings through protect + evaluate (resumable) and "
                                   "write results.csv, plots and, with --markdown, a report (e.g. docs/ablations.md "
                                   "or docs/defaults.md). Config format: see onlymine.ablation.config.")
    p.add_argument("configs", nargs="+", help="YAML config file(s); each gets OUTDIR/<config name>/")
    p.add_argument("-o", "--out", required=True, help="output folder (protected files per setting, results.csv)")
    p.add_argument("--markdown", help="write the Markdown report here (e.g. docs/ablations.md)")
    p.add_argument("--figures", help="folder for the figures (default: the Markdown's img/ folder, else "
                                     "OUTDIR/<config>/figures)")
    p.add_argument("--title", default="Ablations: layer, eps, alpha, steps, lam", help="report title")
    p.add_argument("--limit", type=int, help="override every config's photo limit (quick runs)")
    p.add_argument("--steps", type=int, help="override the base steps of every config (quick runs)")
    p.add_argument("--no-explain", action="store_true", help="skip the Grad-CAM and confidence figures")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    remember(p)


def run(a: argparse.Namespace) -> int:
    from onlymine import io
    from onlymine.ablation import ConfigError, load_config, run_ablation
    from onlymine.ablation.document import markdown, write_run
    from onlymine.ablation.runner import protection
    from onlymine.models import LayerError, ModelError
    from onlymine.report import percent
    from onlymine.runtime import pick_device

    t0 = time.perf_counter()
    command = command_line(a)
    try:
        cfgs = [load_config(c) for c in a.configs]
    except ConfigError as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        print(f"onlymine: config names must be distinct, got {names}", file=sys.stderr)
        return 2
    device = str(pick_device(a.device))
    runs, outputs, models = [], [], {}
    for cfg in cfgs:
        if a.limit is not None:
            cfg.limit = a.limit
        if a.steps is not None:
            cfg.base["steps"] = a.steps
        out = Path(a.out) / cfg.name
        figdir = Path(a.figures) if a.figures else (Path(a.markdown).parent / "img" if a.markdown else out / "figures")
        try:
            res = run_ablation(cfg, out, device=device, progress=not a.no_progress, models=models)
        except (ModelError, LayerError, ValueError) as e:
            print(f"onlymine: {cfg.source}: {e}", file=sys.stderr)
            return 2
        models.update(res.models)
        o = write_run(res, figdir, cfg.name, explain=not a.no_explain)
        runs.append(res)
        outputs.append(o)
        c = o["analysis"]["chosen"]
        print(f"{cfg.name}: {len(res.rows)} settings -> {out}/results.csv; recommended: "
              + (f"layer {c['layer']}, lam {c['lam']:g} (unauthorized {percent(protection(c), 1)}%, PSNR "
                 f"{c['psnr']:.2f} dB)" if c else "none feasible"))
        for f in o["figures"].values():
            print(f"  figure: {f}")
    if a.markdown:
        md = markdown(runs, outputs, Path(a.markdown), a.title, command, time.perf_counter() - t0)
        io.write_text_atomic(a.markdown, md)
        print(f"written: {a.markdown}")
    return 0
