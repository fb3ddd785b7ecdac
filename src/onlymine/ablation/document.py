"""Ablation outputs: ``results.csv``/``results.json``, figures, explanations and the Markdown document
(``docs/ablations.md``, ``docs/defaults.md``), all from :class:`~onlymine.ablation.runner.AblationRun` objects."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from onlymine import io, report
from onlymine.ablation import figures
from onlymine.ablation.analysis import feasible, front_gap, pareto_front, recommend
from onlymine.ablation.config import code_default
from onlymine.ablation.runner import AblationRun, authorized_kept, protection
from onlymine.experiments.outputs import machine

log = logging.getLogger(__name__)


def analyse(run: AblationRun) -> dict[str, Any]:
    """Front, recommended row, and the row of the code's current default, for one run."""
    cfg = run.config
    rec_cfg = cfg.recommend
    min_auth = float(rec_cfg.get("min_authorized", 1.0))
    base = run.points[0]
    eps = base.eps * 255 if rec_cfg.get("eps", "base") == "base" else rec_cfg.get("eps")
    ok = feasible(run.rows, min_auth)
    front = pareto_front(ok)
    chosen = recommend(run.rows, eps, min_auth, rec_cfg.get("min_psnr"), float(rec_cfg.get("tolerance", 0.0)))
    cur = code_default(cfg.attack, cfg.authorized)
    current = next((r for r in run.rows if cur and r["layer"] == cur.get("layer") and r["lam"] == cur.get("lam")
                    and abs(r["eps_255"] - base.eps * 255) < 1e-6 and r["steps"] == base.steps
                    and abs(r["alpha_255"] - base.alpha * 255) < 1e-6), None)
    n = max((r["n"] for r in run.rows), default=0)
    # "near": within one image of one unauthorized model, at least 5 points
    near = max(0.05, 1 / (n * max(1, len(cfg.unauthorized)))) if n else 0.05

    def gap(r: dict[str, Any] | None) -> float | None:
        return None if r is None or r not in ok else front_gap(r, front)

    return {"front": front, "chosen": chosen, "chosen_gap": gap(chosen), "current": current,
            "current_gap": gap(current), "current_defaults": cur, "near": near, "min_authorized": min_auth,
            "feasible": len(ok)}


def write_run(run: AblationRun, figdir: Path, prefix: str, explain: bool = True) -> dict[str, Any]:
    """results.csv/json in the run folder, and the figures (``<prefix>-pareto.png``, ...) in ``figdir``."""
    cfg, a = run.config, analyse(run)
    report.write_csv(run.out / "results.csv", run.rows)
    report.write_json(run.out / "results.json", {"config": str(cfg.source), "rows": run.rows,
                                                 "chosen": a["chosen"], "front": [r["id"] for r in a["front"]]})
    figs: dict[str, Path] = {}
    n = max((r["n"] for r in run.rows), default=0)
    title = f"{cfg.name}: authorized {report.short_name(cfg.authorized)}, n={n}"
    if run.rows:
        figs["pareto"] = figures.pareto_plot(figdir / f"ablation-{prefix}-pareto.png", run.rows, title,
                                             a["chosen"], a["min_authorized"])
    axes = {r["axis"] for r in run.rows}
    if "layer" in axes:
        figs["layer"] = figures.layer_bars(figdir / f"ablation-{prefix}-layers.png", run.rows, cfg.unauthorized,
                                           title + " - layer")
    for ax in ("lam", "eps", "alpha", "steps"):
        if ax in axes:
            figs[ax] = figures.sweep_plot(figdir / f"ablation-{prefix}-{ax}.png", run.rows, ax, cfg.unauthorized,
                                          title + f" - {ax} sweep")
    n_explain = int(cfg.explain.get("images", 0))
    if explain and n_explain > 0:
        figs.update(write_explanations(run, figdir, prefix, a["chosen"] or (run.rows[0] if run.rows else None),
                                       n_explain))
    return {"analysis": a, "figures": figs}


def write_explanations(run: AblationRun, figdir: Path, prefix: str, row: dict[str, Any] | None,
                       n_images: int) -> dict[str, Path]:
    """Grad-CAM grid (first ``n_images`` photos) and confidence figure (all photos) for one setting."""
    from onlymine.explain import confidence_figure, confidence_rows, gradcam_grid
    from onlymine.judges import ClassifierJudge

    if row is None or row["id"] not in run.evaluations:
        return {}
    cfg = run.config
    ev = run.evaluations[row["id"]]
    items = [(r["image"], io.load_image(r["clean"]).rgb, io.load_image(r["protected"]).rgb) for r in ev.images]
    models = [run.models[s] for s in [cfg.authorized, *cfg.unauthorized]]
    auth = run.models[cfg.authorized].name
    what = f"setting {row['id']}"
    out = {"gradcam": gradcam_grid(figdir / f"gradcam-{prefix}.png", items[:n_images], models, auth,
                                   title=f"Grad-CAM, {what}")}
    crow = confidence_rows(items, [ClassifierJudge(m, batch_size=cfg.batch_size) for m in models], auth)
    report.write_csv(run.out / f"confidence-{row['id']}.csv", crow)
    out["confidence"] = confidence_figure(figdir / f"confidence-{prefix}.png", crow, auth,
                                          f"top-1 confidence, {what}, n={len(items)}")
    return out


def _fmt_row(r: dict[str, Any], unauthorized: Sequence[str], front_ids: set[str]) -> list[str]:
    cells = [r["axis"], f"`{r['layer']}`", report.number(r["eps_255"], 1), report.number(r["alpha_255"], 2),
             str(r["steps"]), f"{r['lam']:g}", report.percent(authorized_kept(r), 1),
             report.percent(r.get("authorized_accuracy"), 1)]
    cells += [report.percent(figures._acc(r, u), 1) for u in unauthorized]
    cells += [f"**{report.percent(protection(r), 1)}**", report.number(r.get("psnr")), report.number(r.get("ssim"), 3),
              report.number(r.get("seconds_per_image"), 1), "yes" if r["id"] in front_ids else ""]
    return cells


def markdown(runs: Sequence[AblationRun], outputs: Sequence[dict[str, Any]], md_path: Path, title: str,
             command: str, wall_s: float, intro: str = "") -> str:
    """The document: run facts, the recommendation per config, the checks, then each config's figures and
    full table."""
    rel = md_path.parent.resolve()
    lines = [f"# {title}", "", f"_Generated by `{command}`; do not edit by hand._", "",
             f"- **Machine:** {machine()}",
             f"- **Date:** {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- **Wall time of this invocation:** {wall_s / 60:.1f} min (settings an earlier run finished are "
             "resumed, not redone, and not counted)"]
    for run in runs:
        m = run.models
        lines.append(f"- **{run.config.name}** (`{run.config.source}`): {len(run.files)} photos from "
                     f"`{run.config.data_dir()}`, {len(run.rows)} settings, design {run.config.design}; models: "
                     + "; ".join(f"`{s}` ({'pretrained' if m[s].cfg.pretrained else 'NOT pretrained, random init'})"
                                 for s in [run.config.authorized, *run.config.unauthorized]))
    lines.append("")
    if intro:
        lines += [intro, ""]
    lines += ["Protection = average top-1 accuracy of the unauthorized models on the saved protected files "
              "(agreement with their clean predictions when the photos have no labels); lower is better. "
              "*Authorized kept* = share of saved files on which the authorized model's clean prediction "
              "survived (a setting is feasible when it is at least the config's `min_authorized`, 100% by "
              "default). The recommended setting is the feasible one with the lowest unauthorized accuracy at the "
              "base budget (eps, alpha, steps of the base point); ties go to the higher PSNR. *Gap to front* = "
              "how many points its unauthorized accuracy lies above the best feasible setting with at least its "
              "PSNR (0 = on the Pareto front).", ""]
    hdr = ["Config", "Authorized", "Recommended layer", "lam", "eps/alpha/N", "Authorized kept (%)",
           "Unauthorized avg (%)", "PSNR (dB)", "Gap to front (pp)", "Code default (layer, lam)",
           "Code default: unauth avg (%) / gap (pp)"]
    body = []
    for run, o in zip(runs, outputs, strict=True):
        a = o["analysis"]
        c, cur = a["chosen"], a["current"]
        cd = a["current_defaults"]
        variants = run.config.design == "variants"
        body.append([run.config.name, report.short_name(run.config.authorized),
                     (f"variant **{c['variant']}**" if variants else f"`{c['layer']}`") if c else "none feasible",
                     f"{c['lam']:g}" if c else "",
                     f"{c['eps_255']:g}/{c['alpha_255']:g}/{c['steps']}" if c else "",
                     report.percent(authorized_kept(c), 1) if c else "", report.percent(protection(c), 1) if c else "",
                     report.number(c["psnr"]) if c else "", report.percent(a["chosen_gap"], 1),
                     "n/a (design: variants)" if variants else
                     f"`{cd.get('layer')}`, {cd.get('lam')}" if cd else "none",
                     (f"{report.percent(protection(cur), 1)} / {report.percent(a['current_gap'], 1)}"
                      + ("" if authorized_kept(cur) is None or authorized_kept(cur) >= a["min_authorized"]
                         else " (authorized flipped)")) if cur else "not measured"])
    lines += ["## Recommendation", "", report.Table(hdr, body).markdown()]
    lines += ["## What the issue asks this run to show", "", "| Claim | Holds | Evidence |", "|---|---|---|"]
    for run, o in zip(runs, outputs, strict=True):
        for claim, holds, ev in checks(run, o["analysis"]):
            lines.append(f"| {claim} | {'yes' if holds else '**no**'} | {ev} |")
    lines.append("")
    for run, o in zip(runs, outputs, strict=True):
        cfg, a = run.config, o["analysis"]
        lines += [f"## {cfg.name}: authorized `{cfg.authorized}`", "",
                  f"Unauthorized: {', '.join(f'`{u}`' for u in cfg.unauthorized) or 'none'}. "
                  + (f"Base settings, changed by each variant: {cfg.base}. " if cfg.design == "variants"
                     else f"Base point: `{run.points[0].id}`. ")
                  + f"Extra settings: {cfg.settings or 'none'}. Results: "
                  f"`{run.out / 'results.csv'}`.", ""]
        for key, cap in (("pareto", "Protection against PSNR; dashed: Pareto front of the feasible settings; "
                                    "star: recommended"), ("layer", "Per layer (base eps/alpha/N/lam)"),
                         ("lam", "lam sweep"), ("eps", "eps sweep (alpha follows eps)" if cfg.alpha_follows_eps
                                                 else "eps sweep"), ("alpha", "alpha sweep"), ("steps", "steps sweep"),
                         ("gradcam", "Grad-CAM (pytorch-grad-cam, last stage of each model, its own top-1 class), "
                                     "recommended setting, like the paper's Figure 3"),
                         ("confidence", "Top-1 softmax confidence, clean vs protected, recommended setting, like "
                                        "the paper's Figure 5")):
            if key in o["figures"]:
                p = Path(o["figures"][key]).resolve()
                try:
                    link = p.relative_to(rel)
                except ValueError:
                    link = p
                lines += [f"**{cap}**", "", f"![{cfg.name} {key}]({link})", ""]
        if cfg.design == "variants":
            lines += [variant_table(run), ""]
        hdr = ["Varies", "Layer", "eps", "alpha", "N", "lam", "Auth. kept (%)", "Auth. acc (%)"]
        hdr += [f"{report.short_name(u)} (%)" for u in cfg.unauthorized]
        hdr += ["Unauth avg (%)", "PSNR", "SSIM", "s/img", "Front"]
        ids = {r["id"] for r in a["front"]}
        lines += [report.Table(hdr, [_fmt_row(r, cfg.unauthorized, ids) for r in run.rows]).markdown()]
    return "\n".join(lines)


def variant_table(run: AblationRun) -> str:
    """Design ``variants``: one row per variant, each figure the mean over its seeds (min-max in brackets)."""
    cfg = run.config
    by: dict[str, list[dict[str, Any]]] = {}
    for r in run.rows:
        by.setdefault(r["variant"] or r["id"], []).append(r)
    extra = list(cfg.transforms)

    def cell(rows: list[dict[str, Any]], key: str, digits: int = 1, pct: bool = True) -> str:
        vals = [r.get(key) for r in rows if r.get(key) is not None]
        if not vals:
            return ""
        f = (lambda v: report.percent(v, digits)) if pct else (lambda v: report.number(v, digits))
        m = sum(vals) / len(vals)
        return f(m) + (f" ({f(min(vals))}-{f(max(vals))})" if len(vals) > 1 and max(vals) > min(vals) else "")

    def agree(rows: list[dict[str, Any]], t: str) -> str:
        return cell(rows, "unauthorized_agreement" if t == "crop" else f"unauthorized_agreement_{t}")

    # the threat suite's measure: agreement of each unauthorized model with its own clean top-1 through the same
    # pipeline (lower is better); the accuracy column is the ranking's headline (protection())
    hdr = ["Variant", "Settings", "Seeds", "Auth. kept crop (%)"] + \
        (["Auth. kept full (%)"] if "full" in extra else []) + ["Unauth acc (%)"] + \
        [f"Unauth agree {t} (%)" for t in extra] + ["worst (%)", "mean (%)", "PSNR (dB)", "SSIM", "HaarPSI",
                                                     "ring", "s/img"]
    body = []
    for name, rows in by.items():
        v = cfg.variants.get(name, {})
        body.append([f"**{name}**", ", ".join(f"{k}={v[k]}" for k in v) or "base",
                     str(len(rows)), cell(rows, "authorized_agreement")]
                    + ([cell(rows, "authorized_agreement_full")] if "full" in extra else [])
                    + [cell(rows, "unauthorized_accuracy")]
                    + [agree(rows, t) for t in extra]
                    + [cell(rows, "unauthorized_agreement_worst"), cell(rows, "unauthorized_agreement_mean"),
                       cell(rows, "psnr", 2, False), cell(rows, "ssim", 3, False), cell(rows, "haarpsi", 3, False),
                       cell(rows, "ring_ratio", 2, False), cell(rows, "seconds_per_image", 1, False)])
    return report.Table(hdr, body).markdown()


def checks(run: AblationRun, a: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Coverage of the design (>= 5 layers, 4 eps, 4 lam; not for ``variants``) and whether the
    recommendation and the code's current default sit on or near the Pareto front."""
    name = run.config.name
    n = {k: len({r[k] for r in run.rows}) for k in ("layer", "eps_255", "lam")}
    out = [] if run.config.design == "variants" else [
        (f"{name}: at least 5 layers, 4 eps and 4 lam values measured",
         n["layer"] >= 5 and n["eps_255"] >= 4 and n["lam"] >= 4,
         f"{n['layer']} layers, {n['eps_255']} eps, {n['lam']} lam")]
    near = a["near"]
    for key, label in (("chosen", "recommended setting"), ("current", "code's current default")):
        if key == "current" and run.config.design == "variants":
            continue
        g = a[f"{key}_gap"]
        out.append((f"{name}: the {label} is on or near (<= {100 * near:.1f} pp) the Pareto front",
                    g is not None and g <= near + 1e-9,
                    "not measured / not feasible" if g is None else f"gap {100 * g:.1f} pp"))
    return out

