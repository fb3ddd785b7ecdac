"""Run an ablation: every setting of a config as one cell of the shared protocol.

For each :class:`~onlymine.ablation.config.Point`, :func:`onlymine.experiments.run.run_cell` protects the photos
into ``OUT/settings/<point id>/`` (resumable through its manifest) and scores the saved files with the authorized
model and every unauthorized model (cached in the same folder); then one tidy row is made: authorized
accuracy/agreement on the saved files, each unauthorized accuracy and their average, PSNR, SSIM and seconds per
image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onlymine import report
from onlymine.ablation.config import AXES, AblationConfig, Point
from onlymine.evaluate import Evaluation, quality_summary, read_labels, summarize
from onlymine.experiments import run as cells
from onlymine.experiments.methods import applicable
from onlymine.judges import ClassifierJudge
from onlymine.models import Classifier, load_model
from onlymine.protect import Protector
from onlymine.settings import DEFAULT_PRESET, ProtectSettings

log = logging.getLogger(__name__)

SETTINGS_DIR = "settings"


@dataclass
class AblationRun:
    """What one config produced: its points, one result row per point, the evaluations and the models."""

    config: AblationConfig
    out: Path
    points: list[Point]
    rows: list[dict[str, Any]]
    files: list[Path]
    models: dict[str, Classifier]
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    wall_s: float = 0.0


def select_photos(cfg: AblationConfig) -> tuple[Path, list[Path], dict[str, Any] | None]:
    """(data folder, photos, labels) for a config; the subset/limit rules of ``experiment imagenet``."""
    from onlymine.experiments.imagenet import select_files

    data = cfg.data_dir()
    files = select_files(data, cfg.subset, cfg.limit, cfg.split)
    if not files:
        raise ValueError(f"{data}: no images (subset {cfg.subset!r})")
    lab = cfg.labels_file()
    return data, files, read_labels(lab) if lab else None


def point_settings(cfg: AblationConfig, pt: Point) -> ProtectSettings:
    """The settings of one point: its attack, ``cfg.settings`` and the point's parameters (the shared ones only
    where the attack has them, see :mod:`onlymine.ablation.config`)."""
    params = pt.params()
    own = {k: v for k, v in params.items() if k not in AXES}
    attack = str(own.pop("attack", None) or cfg.attack)
    shared = {k: v for k, v in cfg.settings.items() if k != "attack"}
    values = {**applicable(attack, shared), **applicable(attack, {k: params[k] for k in AXES}), **own}
    preset = values.pop("preset", DEFAULT_PRESET)
    return ProtectSettings.build(preset=preset, paper=bool(values.pop("paper", False)), model=cfg.authorized,
                                 attack=attack, **values)


def run_ablation(cfg: AblationConfig, out: str | Path, device: str = "cpu", progress: bool = True,
                 models: dict[str, Classifier] | None = None,
                 on_row: Callable[[dict[str, Any]], None] | None = None) -> AblationRun:
    """Protect and evaluate every point of ``cfg`` (resuming finished work) and return the rows."""
    t0 = time.perf_counter()
    out = Path(out)
    data, files, labels = select_photos(cfg)
    models = dict(models or {})
    for spec in [cfg.authorized, *cfg.unauthorized]:
        if spec not in models:
            models[spec] = load_model(spec, device=device)
    auth = models[cfg.authorized]
    judges = [ClassifierJudge(models[s], batch_size=cfg.batch_size) for s in [cfg.authorized, *cfg.unauthorized]]
    points = cfg.points(auth.stages)
    names = [_name(f, data) for f in files]
    clean_cache: dict[tuple[str, str], Any] = {}
    run = AblationRun(cfg, out, points, [], files, models)
    from tqdm.auto import tqdm

    bar = tqdm(points, desc=f"ablate {cfg.name}", unit="setting", disable=not progress)
    for pt in bar:
        bar.set_postfix_str(pt.id, refresh=False)
        s = point_settings(cfg, pt)
        cell = cells.run_cell(files, names, out / SETTINGS_DIR / pt.id, s,
                              lambda s=s: Protector(s, device=device, model=auth), judges, auth.name, labels=labels,
                              transforms=("crop", *(t for t in cfg.transforms if t != "crop")), clean_cache=clean_cache,
                              batch_size=cfg.batch_size, progress=progress, desc=f"evaluate {pt.id}")
        if not cell.outputs or cell.evaluation is None:
            log.warning("%s: no protected file to evaluate", pt.id)
            continue
        run.evaluations[pt.id] = cell.evaluation
        row = result_row(pt, cell.evaluation, cell.rows, auth.name, [models[u].name for u in cfg.unauthorized])
        run.rows.append(row)
        if on_row:
            on_row(row)
    run.wall_s = time.perf_counter() - t0
    return run


def result_row(pt: Point, ev: Evaluation, protect_rows: list[dict[str, Any]], authorized: str,
               unauthorized: list[str]) -> dict[str, Any]:
    """One tidy row: the point's parameters, accuracies/agreements (fractions), quality and speed."""
    summary = summarize(ev)
    by_judge = {r["judge"]: r for r in summary if r["transform"] == "crop"}
    q = quality_summary(ev)
    row: dict[str, Any] = {"id": pt.id, "axis": pt.axis, "variant": pt.variant, "seed": dict(pt.extra).get("seed"),
                           "layer": pt.layer, "eps_255": round(pt.eps * 255, 4),
                           "alpha_255": round(pt.alpha * 255, 4), "steps": pt.steps, "lam": pt.lam,
                           "n": q["n"]}
    a = by_judge.get(authorized, {})
    row["authorized_accuracy"] = a.get("accuracy")
    row["authorized_agreement"] = a.get("agreement")
    for u in unauthorized:
        row[f"{report.short_name(u)}_accuracy"] = by_judge.get(u, {}).get("accuracy")
    for u in unauthorized:
        row[f"{report.short_name(u)}_agreement"] = by_judge.get(u, {}).get("agreement")
    row["unauthorized_accuracy"] = report.mean(by_judge.get(u, {}).get("accuracy") for u in unauthorized)
    row["unauthorized_agreement"] = report.mean(by_judge.get(u, {}).get("agreement") for u in unauthorized)
    for t in sorted({r["transform"] for r in summary} - {"crop"}):
        tj = {r["judge"]: r for r in summary if r["transform"] == t}
        row[f"authorized_agreement_{t}"] = tj.get(authorized, {}).get("agreement")
        row[f"unauthorized_accuracy_{t}"] = report.mean(tj.get(u, {}).get("accuracy") for u in unauthorized)
        row[f"unauthorized_agreement_{t}"] = report.mean(tj.get(u, {}).get("agreement") for u in unauthorized)
    per = {t: report.mean({r["judge"]: r for r in summary if r["transform"] == t}.get(u, {}).get("agreement")
                          for u in unauthorized) for t in {r["transform"] for r in summary}}
    per = {t: v for t, v in per.items() if v is not None}
    if per:  # the threat suite: where the protection is weakest, and on average
        row["unauthorized_agreement_worst"] = max(per.values())
        row["worst_pipeline"] = max(per, key=lambda t: per[t])
        row["unauthorized_agreement_mean"] = report.mean(per.values())
    row["psnr"] = q.get("psnr")
    row["ssim"] = q.get("ssim")
    row["haarpsi"] = q.get("haarpsi")
    row["ring_ratio"] = q.get("ring_ratio")
    row["linf_max_255"] = None if q.get("linf_max") is None else round(q["linf_max"] * 255, 3)
    row["verified_ok"] = sum(r.get("status") == "ok" for r in protect_rows)
    row["retried"] = sum(int(r.get("attempts", 1)) > 1 for r in protect_rows)
    row["seconds_per_image"] = report.mean(r.get("seconds") for r in protect_rows)
    return row


def protection(row: dict[str, Any]) -> float | None:
    """The protection score a row is judged by: unauthorized accuracy (lower is better); agreement with the
    clean predictions when the photos have no labels."""
    v = row.get("unauthorized_accuracy")
    return v if v is not None else row.get("unauthorized_agreement")


def authorized_kept(row: dict[str, Any]) -> float | None:
    """Authorized agreement on the saved files (the authorized model's clean prediction survived)."""
    return row.get("authorized_agreement")


def _name(f: Path, root: Path) -> str:
    try:
        return str(f.relative_to(root))
    except ValueError:
        return f.name
