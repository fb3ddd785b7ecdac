"""The black-box detectors from PyPI on real kit photos (each skipped with the reason when it cannot run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from onlymine.detection import Detections, DetectorError, build_detector
from onlymine.io import load_image


def detector(name: str):
    try:
        return build_detector(name)
    except DetectorError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def obama(kit_dir: Path) -> torch.Tensor:
    return load_image(kit_dir / "photos" / "faces" / "obama_1.jpg").rgb


# RetinaFace's face box on obama_1 (tested against the package in test_detection_reference), x1 y1 x2 y2
OBAMA_FACE = torch.tensor([[378.0, 80.0, 610.0, 428.0]])


def test_yolov3_tiny_finds_the_documented_objects(kit_dir: Path) -> None:
    yolo = detector("yolov3-tiny")
    im = load_image(kit_dir / "photos" / "detection" / "darknet_person.jpg").rgb
    d = yolo.detect([im])[0].above(0.4)
    # MODELS.md: person .98, dog .88, the horse seen as sheep .81
    assert {"person", "dog"} <= set(d.label_names()), d.label_names()
    assert float(d.scores.max()) > 0.9
    assert float(d.boxes[:, 2].max()) <= im.shape[2]


@pytest.mark.parametrize(("name", "threshold"), [("mtcnn", 0.9), ("blazeface", 0.5), ("haar", 0.5)])
def test_face_detectors_find_obamas_face(obama: torch.Tensor, name: str, threshold: float) -> None:
    d = detector(name).detect([obama])[0].above(threshold)
    assert len(d) >= 1
    assert float(box_iou(OBAMA_FACE, d.boxes).max()) > 0.4, d.boxes  # face boxes differ in tightness


def test_face_detectors_count_a_group(kit_dir: Path) -> None:
    im = load_image(kit_dir / "photos" / "faces" / "pyfeat_multi_face.jpg").rgb
    assert len(detector("blazeface").detect([im])[0].above(0.5)) == 5
    assert len(detector("mtcnn").detect([im])[0].above(0.9)) == 5


def test_nudenet_sees_faces(kit_dir: Path) -> None:
    nn = detector("nudenet")
    im = load_image(kit_dir / "photos" / "faces" / "pyfeat_multi_face.jpg").rgb
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
