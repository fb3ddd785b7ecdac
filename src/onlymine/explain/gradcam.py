"""Grad-CAM heat maps (Selvaraju et al. 2017) with the maintained ``grad-cam`` package (pytorch-grad-cam).

The :class:`~onlymine.models.Classifier` owns its preprocessing, so the image is first brought to the model's
input (resize/crop/normalise via ``Classifier.preprocess``) and Grad-CAM runs on the network itself; the heat
map is shown over the same crop, de-normalised back to [0, 1]. The target class is the model's own top-1
prediction on the image shown (so a protected image shows where the model looks for *its* new answer), and
the target layer is the model's last feature stage (``Classifier.stages()[-1]``) unless one is given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onlymine import report
from onlymine.models import Classifier

log = logging.getLogger(__name__)


class _Net(nn.Module):
    """The classifier's network on an already preprocessed batch (what Grad-CAM differentiates)."""

    def __init__(self, clf: Classifier) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clf.run_net(x)


def model_view(clf: Classifier, image: torch.Tensor) -> torch.Tensor:
    """The (3, h, w) crop the model sees, in [0, 1] (its preprocessing without the mean/std)."""
    x = clf.preprocess([image])[0].detach().cpu()
    mean = torch.tensor(clf.cfg.mean).view(3, 1, 1)
    std = torch.tensor(clf.cfg.std).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def heatmap(clf: Classifier, image: torch.Tensor, layer: str | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM map (h, w) in [0, 1] at the model's input size for one [0, 1] image, and the class explained."""
    from pytorch_grad_cam import GradCAM

    name = layer or clf.stages()[-1]
    target = dict(clf.net.named_modules()).get(name)
    if target is None:
        raise ValueError(f"{clf.name}: no module named {name!r} for Grad-CAM")
    x = clf.preprocess([image.to(clf.device)]).detach().requires_grad_(True)  # the library needs an input grad
    with GradCAM(model=_Net(clf), target_layers=[target]) as cam:
        maps = cam(input_tensor=x, targets=None)  # None: the top-1 class
        cls = int(cam.outputs.argmax(-1)[0]) if getattr(cam, "outputs", None) is not None else -1
    return maps[0], cls


def overlay(clf: Classifier, image: torch.Tensor, layer: str | None = None) -> tuple[np.ndarray, int]:
    """The model's view of ``image`` with its Grad-CAM map overlaid (uint8 RGB), and the explained class."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    m, cls = heatmap(clf, image, layer)
    view = model_view(clf, image).permute(1, 2, 0).numpy().astype(np.float32)
    return show_cam_on_image(view, m, use_rgb=True), cls


def gradcam_grid(path: str | Path, items: Sequence[tuple[str, torch.Tensor, torch.Tensor]],
                 models: Sequence[Classifier], authorized: str, layers: dict[str, str] | None = None,
                 title: str = "") -> Path:
    """The paper's Figure 3: one row per image (caption, clean, protected); for each model (authorized
    first) a clean and a protected Grad-CAM column, titled with the predicted class."""
    plt = report._plt()
    models = sorted(models, key=lambda m: m.name != authorized)
    ncol = 1 + 2 * len(models)
    fig, axes = plt.subplots(len(items), ncol, figsize=(1.9 * ncol, 2.1 * len(items) + 0.6), squeeze=False)
    for row, (caption, clean, prot) in zip(axes, items, strict=True):
        row[0].imshow(clean.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        row[0].set_title(caption, fontsize=6)
        for k, m in enumerate(models):
            for j, (img, tag) in enumerate(((clean, "clean"), (prot, "protected"))):
                ov, cls = overlay(m, img, (layers or {}).get(m.name))
                ax = row[1 + 2 * k + j]
                ax.imshow(ov)
                role = "auth." if m.name == authorized else "unauth."
                cname = _class_name(m, cls)
                ax.set_title(f"{report.short_name(m.name)} ({role})\n{tag}: {cname}", fontsize=6)
        for ax in row:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return report._save(fig, path)


def _class_name(m: Classifier, cls: int) -> str:
    names = m.cfg.class_names
    if names and 0 <= cls < len(names):
        return str(names[cls])[:18]
    return str(cls)
