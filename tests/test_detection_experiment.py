"""``onlymine experiment detection`` end to end on two downscaled sample photos (a tiny, fast configuration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import SAMPLES
from onlymine.cli import main


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kit's layout (detection/, faces/) with a photo each: the cameraman (YOLO: person), Eileen Collins
    (Haar: a face)."""
    root = tmp_path_factory.mktemp("det-data")
    for group, name in (("detection", "camera.png"), ("faces", "astronaut.png")):
        (root / group).mkdir()
        im = Image.open(SAMPLES / name).convert("RGB")
        im.thumbnail((320, 320))
        im.save(root / group / (Path(name).stem + ".png"))
    return root


def test_experiment_writes_transfer_tables_and_figures(tiny_data: Path, tmp_path: Path, mobilenet) -> None:
    out, md, img = tmp_path / "out", tmp_path / "docs" / "results-detection.md", tmp_path / "docs" / "img"
    rc = main(["experiment", "detection", "-o", str(out), "--data", str(tiny_data), "--models",
               "torchvision:mobilenet_v2", "--detectors", "yolov3-tiny", "haar", "--steps", "2", "--no-progress",
               "--markdown", str(md), "--figure-dir", str(img)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert {r["method"] for r in rows} == {"fmd", "uniform-noise"}
    assert {r["detector"] for r in rows} == {"yolov3-tiny", "haar"}
    # the threat suite: each detector's own read, and after JPEG 75 / half size; the classifier's whole frame
    assert {r["transform"] for r in rows} == {"crop", "jpeg75", "half"}
    assert all(0 <= r["authorized_kept_full"] <= 1 for r in rows)
    for r in rows:
        # FMD keeps the authorized top-1 through its own read (verified and retried by the protect path)
        if r["method"] == "fmd" and r["transform"] == "crop":
            assert r["authorized_kept"] == 1.0
        assert 0 <= r["authorized_kept"] <= 1
        assert r["eps"] == pytest.approx(16 / 255)
        # a JPEG or half-size copy may have no clean detection left to survive; the detector's own read has one
        assert r["n_clean"] >= (1 if r["transform"] == "crop" else 0)
        assert r["survival"] is None or 0 <= r["survival"] <= 1
    assert {s["detector"] for s in res["summary"]} >= {"average"}
    text = md.read_text()
    assert "survival" in text and "UniformNoise" in text and "img/detection-objects.png" in text
    assert "the file after jpeg75" in text and "authorized kept, whole frame (%)" in text
    assert (img / "detection-objects.png").stat().st_size > 10_000
    assert (out / "report.html").is_file()
    per_image = (out / "per_image.csv").read_text().splitlines()
    assert len(per_image) == 1 + 2 * 2 * 2  # header + methods x detectors x photos
    # the protected files went through the one protect path: manifest + saved PNGs
    assert list((out / "imagenet" / "fmd" / "torchvision_mobilenet_v2").rglob("*.png"))
