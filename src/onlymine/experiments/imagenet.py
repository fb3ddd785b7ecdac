"""``onlymine experiment imagenet``: the paper's ImageNet table (Chai et al. 2024, Table 1) on any classifiers.

Each model in turn is authorized and the others are unauthorized black boxes; FMD with the paper's setting
and with onlymine's defaults is compared with the clean images and the UniformNoise, PGD and FeatureOnly
baselines at the same budget. Defaults: the four real ImageNet classifiers available offline (torchvision
MobileNetV2, EfficientNet-Lite0/1/2) and the kit's labelled photos (``foolbox_*``: true ImageNet labels,
``aib_*``: labels from a consensus of these same four models, so their clean accuracy is ~100% by
construction). With internet, ``--models torchvision:vgg16 torchvision:resnet18 ...`` runs the same protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onlymine.experiments.aggregate import held_out_mean
from onlymine.experiments.methods import METHODS, seeded
from onlymine.experiments.outputs import markdown_report, publish, write_outputs
from onlymine.experiments.run import Protocol, ProtocolResult, run_protocol

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("torchvision:mobilenet_v2", "efficientnet-lite:lite0", "efficientnet-lite:lite1",
                  "efficientnet-lite:lite2")
KIT_IMAGENET = Path(__file__).resolve().parents[3] / ".." / "shared" / "kit" / "photos" / "imagenet"
SUBSETS = {"all": lambda n: True, "foolbox": lambda n: Path(n).name.startswith("foolbox_"),
           "aib": lambda n: Path(n).name.startswith("aib_")}
# Tuning/test split of the kit photos: every setting of onlymine was chosen on the ``tune`` part (the
# 20 foolbox photos, which also calibrated the first FMD+ measurements, and the first 10 aib photos,
# which include the 4 of the defaults sweep); the ``test`` part (the other 57 aib photos) was never looked at
# while tuning.
TUNE_AIB = 10


# The first 16 ``test`` photos were reported in earlier sessions and two decisions looked at them (FIA left out,
# robust keep adopted: docs/beyond.md), so they are no longer photos nothing was tuned on: ``fresh`` is the rest.
SEEN_TEST = 16
SPLITS = ("all", "tune", "test", "fresh")


def split_of(files: list[Path]) -> dict[Path, str]:
    """``tune`` or ``test`` per file (see TUNE_AIB); photos outside foolbox_/aib_ count as ``test``."""
    aib = sorted(f for f in files if f.name.startswith("aib_"))
    tune = {f for f in files if f.name.startswith("foolbox_")} | set(aib[:TUNE_AIB])
    return {f: "tune" if f in tune else "test" for f in files}


def fresh_of(files: list[Path]) -> set[Path]:
    """The ``test`` photos after the first :data:`SEEN_TEST` (the old held-out split); their reports have since
    informed decisions (docs/mid-ssim.md), so they are not strictly held out."""
    part = split_of(files)
    return set(sorted(f for f in files if part[f] == "test")[SEEN_TEST:])


PAPER_AUTHORIZED, PAPER_UNAUTHORIZED = 1.00, 0.1197
DEFAULT_METHODS = tuple(METHODS)
TITLE = "onlymine on ImageNet: each model authorized in turn"


@dataclass
class ImagenetOptions:
    """What ``onlymine experiment imagenet`` runs: photos, models, methods and the settings every method shares
    (``None``: each method's own)."""

    out: Path
    data: Path = KIT_IMAGENET.resolve()
    labels: Path | None = None
    models: Sequence[str] = DEFAULT_MODELS
    authorized: Sequence[str] | None = None  # the models authorized in turn (default: every model); all judge
    methods: Sequence[str] = DEFAULT_METHODS
    subset: str = "all"
    split: str = "all"
    limit: int | None = None
    seed: int | None = None
    seeds: Sequence[int] | None = None  # every protecting method once per seed (``KEY-seedN`` rows)
    eps: float | None = None
    alpha: float | None = None
    steps: int | None = None
    lam: float | None = None
    transforms: Sequence[str] | None = None
    device: str = "auto"
    batch_size: int = 8
    progress: bool = True
    report_only: bool = False


def select_files(data: Path, subset: str, limit: int | None, split: str = "all") -> list[Path]:
    """Images of ``data`` in ``subset`` and ``split``; with ``limit``, taken in turn from foolbox_* and aib_*
    (then others)."""
    from onlymine import io

    files, errors = io.find_images([data])
    for e in errors:
        log.warning("%s", e)
    part = split_of(files)
    fresh = fresh_of(files)
    files = [f for f in files if SUBSETS[subset](f.name) and (split == "all" or part[f] == split or
                                                                 (split == "fresh" and f in fresh))]
    if limit is None or limit >= len(files):
        return files
    groups = [[f for f in files if SUBSETS[g](f.name)] for g in ("foolbox", "aib")]
    groups.append([f for f in files if not any(SUBSETS[g](f.name) for g in ("foolbox", "aib"))])
    picked: list[Path] = []
    while len(picked) < limit:
        for g in groups:
            if g and len(picked) < limit:
                picked.append(g.pop(0))
    return sorted(picked)


def build_protocol(o: ImagenetOptions) -> Protocol:
    """The protocol of ``o``: its photos and labels, every model loaded once, judges, methods and subsets."""
    from onlymine.evaluate import TRANSFORMS, read_labels
    from onlymine.judges import ClassifierJudge
    from onlymine.models import load_model
    from onlymine.runtime import pick_device

    data = Path(o.data)
    if not data.is_dir():
        raise ValueError(f"{data}: no such folder (pass --data DIR with your labelled photos)")
    labels_path = Path(o.labels) if o.labels else data / "labels.csv"
    labels = read_labels(labels_path) if labels_path.is_file() else None
    if labels is None:
        log.warning("no labels (%s missing): reporting agreement with clean predictions only", labels_path)
    files = select_files(data, o.subset, o.limit, o.split)
    if not files:
        raise ValueError(f"{data}: no images in subset {o.subset!r}")
    unknown = [m for m in o.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    transforms = list(o.transforms or TRANSFORMS)
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad:
        raise ValueError(f"unknown transform(s) {bad}; known: {list(TRANSFORMS)}")
    device = pick_device(o.device)
    specs = list(dict.fromkeys(o.models))
    authorized = list(dict.fromkeys(o.authorized or specs))
    outside = [a for a in authorized if a not in specs]
    if outside:
        raise ValueError(f"--authorized {outside[0]} is not among --models ({', '.join(specs)})")
    models = {s: load_model(s, device=device) for s in specs}
    subsets = {k: v for k, v in SUBSETS.items()  # only the subsets that have photos (none: --split test has no foolbox)
               if k == "all" or (o.subset in ("all", k) and any(v(f.name) for f in files))}
    methods = [METHODS[m] for m in dict.fromkeys(o.methods)]
    if o.seeds:
        methods = seeded(methods, o.seeds)
    return Protocol(
        name="imagenet", files=files, root=data, authorized=authorized, models=specs,
        judges=[ClassifierJudge(models[s], batch_size=o.batch_size) for s in specs],
        load_model=models.__getitem__, methods=methods,
        out=Path(o.out), labels=labels, subsets=subsets,
        overrides={"eps": o.eps, "alpha": o.alpha, "steps": o.steps, "lam": o.lam, "seed": o.seed},
        transforms=transforms, device=str(device), batch_size=o.batch_size, progress=o.progress,
        report_only=o.report_only)


def comparison(res: ProtocolResult, results: dict[str, Any]) -> str:
    """Honest comparison with the paper's 100% authorized / 11.97% unauthorized average."""
    from onlymine import report

    ov = {o["method"]: o for o in results["overview"]["all/restricted"]}
    lines = [f"The paper reports, on ImageNet with six pretrained models, authorized accuracy "
             f"{report.percent(PAPER_AUTHORIZED)}% and an unauthorized average of "
             f"{report.percent(PAPER_UNAUTHORIZED)}% "
             "(eps 16/255, alpha 4/255, N 100). Here, on the restricted set:", ""]
    for key in [m.key for m in res.protocol.methods if m.attack in ("fmd", "fmd+")]:
        if key in ov:
            o = ov[key]
            lines.append(f"- {o['label']}: authorized {report.percent(o['authorized_mean'])}% (lowest row "
                         f"{report.percent(o['authorized_min'])}%), unauthorized average "
                         f"{report.percent(o['unauthorized_mean'])}%, PSNR {report.number(o['psnr'])} dB.")
            base = key.removesuffix("-sur")
            if base != key and base in ov:
                lines.append(f"  - {ov[base]['label']} on the same held-out cells (no surrogate): "
                             f"{report.percent(held_out_mean(res, base, key))}%.")
    meta = results["meta"]
    not_pre = [k for k, v in meta["models"].items() if not v["pretrained"]]
    lines += ["", "Differences that matter when reading these numbers: the paper used six models and the full "
              "ImageNet validation images it selected; this run uses "
              f"{len(meta['models'])} models and {meta['images'].get('all')} photos. The four default models are "
              "all small mobile architectures (MobileNetV2 and three EfficientNet-Lite variants that share "
              "building blocks), so transfer between them may be easier or harder than between the paper's "
              "models. The `aib_*` labels are a consensus of these same four models, so their clean accuracy "
              "is ~100% by construction; the `foolbox_*` photos carry true labels and give the unbiased numbers "
              "(see the per-subset tables)."]
    if not_pre:
        lines += ["", f"**{', '.join(not_pre)} are NOT pretrained (random init): this is a smoke run of the code "
                  "path; its numbers say nothing about real models.**"]
    return "\n".join(lines)


def run_imagenet(proto: Protocol, command: str, markdown: str | Path | None = None,
                 results_dir: str | Path | None = None) -> tuple[ProtocolResult, dict[str, Any]]:
    """Run the protocol and write its results, report.html, report.md (into ``results_dir``, default the
    protocol's output folder, so that two reports can share its cells) and (with ``markdown``) the document."""
    res = run_protocol(proto)
    where = Path(results_dir) if results_dir else proto.out
    title = TITLE
    if len(proto.authorized) < len(proto.judges):  # --authorized: say who is, not "each model in turn"
        from onlymine.report import short_name

        title = (f"onlymine on ImageNet: {', '.join(short_name(s) for s in proto.authorized)} authorized, "
                 "every model judging")
    results = write_outputs(res, where, title, command)
    publish(where, markdown_report(res, results, title, comparison=comparison(res, results)), markdown)
    return res, results
