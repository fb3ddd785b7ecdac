"""The differentiable detectors (CenterNet, RetinaFace ONNX via onnx2torch) against the kit's reference outputs
of the ORIGINAL runtimes (TensorFlow.js / TensorFlow) and the package's own end-to-end face counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from onlymine.detection import CenterNet, RetinaFace
from onlymine.io import load_image


@pytest.fixture(scope="module")
def centernet(kit_dir: Path) -> CenterNet:
    return CenterNet(kit_dir / "models" / "centernet_mobilenetv3_coco.onnx")


@pytest.fixture(scope="module")
def retinaface(kit_dir: Path) -> RetinaFace:
    return RetinaFace(kit_dir / "models" / "retinaface_mobilenetv2.onnx")


def reference(kit_dir: Path, name: str) -> tuple[np.lib.npyio.NpzFile, torch.Tensor]:
    z = np.load(kit_dir / "models" / "reference" / f"{name}_ref.npz")
    return z, torch.from_numpy(z["input_uint8_nhwc"]).permute(0, 3, 1, 2).float() / 255


def check_top1000(z: np.lib.npyio.NpzFile, prefix: str, out: torch.Tensor, atol: float) -> None:
    idx = torch.from_numpy(z[f"{prefix}__top1000_flat_index"][0]).long()
    ref = torch.from_numpy(z[f"{prefix}__top1000_values"][0])
    assert tuple(out.shape[1:]) == tuple(z[f"{prefix}__shape"][1:])
    got = out[0].reshape(-1)[idx]
    assert (got - ref).abs().max() <= atol, f"{prefix}: max |diff| {(got - ref).abs().max():.2e} > {atol:.1e}"


def test_centernet_heads_match_tfjs(kit_dir: Path, centernet: CenterNet) -> None:
    z, x = reference(kit_dir, "centernet_mobilenetv3_coco")
    with torch.no_grad():
        heatmap, wh = centernet.net(x)
    check_top1000(z, "tfjs_heatmap", heatmap, 1e-4)  # probabilities: 1e-4 absolute (MODELS.md tolerance)
    check_top1000(z, "tfjs_wh", wh, 1e-5 * float(wh.abs().max()) + 1e-3)  # pixel distances, relative


def test_centernet_decodes_the_documented_objects(kit_dir: Path, centernet: CenterNet) -> None:
    z, x = reference(kit_dir, "centernet_mobilenetv3_coco")
    d = centernet.decode(centernet.forward([x[0]]), [(512, 512)])[0].above(0.3)
    names = d.label_names()
    assert {"person", "dog"} <= set(names), names  # MODELS.md: person .67, dog .44 on darknet_person
    person = d.boxes[names.index("person")]
    assert 0 <= person[0] < person[2] <= 512 and 0 <= person[1] < person[3] <= 512
    # the same photo at full resolution: boxes come back in original pixels
    im = load_image(kit_dir / "photos" / "detection" / "darknet_person.jpg").rgb
    full = centernet.detect([im])[0].above(0.3)
    assert {"person", "dog"} <= set(full.label_names())
    h, w = im.shape[-2:]
    scaled = person * torch.tensor([w / 512, h / 512, w / 512, h / 512])
    from torchvision.ops import box_iou

    best = box_iou(scaled[None], full.boxes[[n == "person" for n in full.label_names()]]).max()
    assert best > 0.8, f"person box in original pixels off: IoU {best:.2f}"


def test_retinaface_heads_match_tensorflow(kit_dir: Path, retinaface: RetinaFace) -> None:
    z, x = reference(kit_dir, "retinaface_mobilenetv2")
    with torch.no_grad():
        heads = retinaface(list(x))  # already letterboxed to 640: prepare() leaves it as is
    for key, out in (("class_logits", heads["class_logits"]), ("bbox_deltas", heads["bbox_deltas"]),
                     ("landmark_deltas", heads["landmark_deltas"])):
        check_top1000(z, f"tf_{key}", out, 1e-5 * float(out.abs().max()) + 5e-5)
    # the in-graph decoding is the documented prior recipe: centre + d*0.1*wh, wh * exp(d*0.2)
    pri = torch.from_numpy(z["priors_cxcywh"])
    d = heads["bbox_deltas"][0]
    c = pri[:, :2] + d[:, :2] * 0.1 * pri[:, 2:]
    wh = pri[:, 2:] * torch.exp(d[:, 2:] * 0.2)
    mine = torch.cat([c - wh / 2, c + wh / 2], 1)
    assert torch.allclose(mine, heads["detections"][0][:, :4], atol=1e-4)
    assert torch.allclose(heads["face_score"][0], heads["class_logits"][0].softmax(-1)[:, 1], atol=1e-5)


@pytest.mark.parametrize(("photo", "faces"), [("obama_1.jpg", 1), ("friends_cast_1.jpg", 6),
                                               ("pyfeat_multi_face.jpg", 5), ("collins_1.png", 1)])
def test_retinaface_counts_equal_the_package(kit_dir: Path, retinaface: RetinaFace, photo: str, faces: int) -> None:
    im = load_image(kit_dir / "photos" / "faces" / photo).rgb
    d = retinaface.detect([im])[0].above(0.95)
    assert len(d) == faces
    assert float(d.boxes[:, 2].max()) <= im.shape[2] and float(d.boxes[:, 3].max()) <= im.shape[1]


def test_retinaface_is_differentiable(kit_dir: Path, retinaface: RetinaFace) -> None:
    im = load_image(kit_dir / "photos" / "faces" / "collins_1.png").rgb.requires_grad_(True)
    heads = retinaface([im])
    heads["class_logits"][0, :, 1].max().backward()
    assert im.grad is not None and float(im.grad.abs().sum()) > 0
