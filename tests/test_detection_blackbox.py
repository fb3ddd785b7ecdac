"""The black-box detectors from PyPI on the repository's real sample photos (each skipped with the reason when it
cannot run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from conftest import SAMPLES
from onlymine.detection import Detections, DetectorError, build_detector
from onlymine.io import load_image


def detector(name: str):
    try:
        return build_detector(name)
    except DetectorError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def collins() -> torch.Tensor:
    return load_image(SAMPLES / "astronaut.png").rgb


# RetinaFace's face box on astronaut.png (= the kit's faces/collins_1.png, whose face count test_detection_reference
# checks against the package), x1 y1 x2 y2
COLLINS_FACE = torch.tensor([[179.0, 59.0, 270.0, 179.0]])


def test_yolov3_tiny_finds_the_documented_objects() -> None:
    yolo = detector("yolov3-tiny")
    im = load_image(SAMPLES / "camera.png").rgb  # grayscale; the kit's detection/labels.csv: person
    d = yolo.detect([im])[0].above(0.4)
    assert "person" in d.label_names(), d.label_names()
    # the cameraman himself (x 0-290, head to the bottom edge), not only the small person in the background
    tall = [b for b, n in zip(d.boxes.tolist(), d.label_names(), strict=True) if n == "person" and b[3] - b[1] > 400]
    assert tall and tall[0][0] < 50 and 250 < tall[0][2] < 330, d.boxes
    assert float(d.boxes[:, 2].max()) <= im.shape[2] and float(d.boxes[:, 3].max()) <= im.shape[1]
    assert len(yolo.detect([torch.full((3, 256, 256), 0.5)])[0].above(0.4)) == 0


@pytest.mark.parametrize(("name", "threshold"), [("mtcnn", 0.9), ("blazeface", 0.5), ("haar", 0.5)])
def test_face_detectors_find_collins_face(collins: torch.Tensor, name: str, threshold: float) -> None:
    d = detector(name).detect([collins])[0].above(threshold)
    assert len(d) == 1
    assert float(box_iou(COLLINS_FACE, d.boxes).max()) > 0.6, d.boxes  # face boxes differ in tightness


def test_face_detectors_count_a_group(face_group: Path) -> None:
    im = load_image(face_group).rgb
    assert len(detector("blazeface").detect([im])[0].above(0.5)) == 4
    assert len(detector("mtcnn").detect([im])[0].above(0.9)) == 4


def test_nudenet_sees_faces(face_group: Path) -> None:
    nn = detector("nudenet")
    im = load_image(face_group).rgb
    d = nn.detect([im])[0]
    assert isinstance(d, Detections)
    faces = [n for n in d.above(0.4).label_names() if n.startswith("FACE_")]
    assert len(faces) >= 3, d.label_names()


def test_blank_image_gives_no_faces() -> None:
    blank = torch.full((3, 200, 200), 0.5)
    for name in ("mtcnn", "haar", "blazeface"):
        assert len(detector(name).detect([blank])[0]) == 0


def test_unknown_detector_and_missing_model_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="unknown detector"):
        build_detector("nope")
    with pytest.raises(DetectorError, match="not found"):
        build_detector("centernet", models_dir=tmp_path)
