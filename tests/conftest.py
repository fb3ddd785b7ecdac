"""Shared fixtures: the offline kit (skipped when absent) and session-wide real models."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ONLYMINE_TEST_KIT points elsewhere (e.g. at nothing, to see what a fresh clone without the kit runs)
KIT = Path(os.environ.get("ONLYMINE_TEST_KIT") or REPO / ".." / "shared" / "kit").resolve()
SAMPLES = REPO / "samples"


@pytest.fixture(scope="session")
def kit_dir() -> Path:
    if not (KIT / "README.md").is_file():
        pytest.skip(f"offline kit not found at {KIT}")
    return KIT


@pytest.fixture(scope="session")
def imagenet_rows(kit_dir: Path) -> list[dict[str, str]]:
    """Rows of the kit's photos/imagenet/labels.csv with a usable label."""
    with open(kit_dir / "photos" / "imagenet" / "labels.csv") as f:
        return [r for r in csv.DictReader(f) if int(r["label"]) >= 0]


@pytest.fixture(scope="session")
def mobilenet():
    """The real MobileNetV2 (ImageNet weights, provisioned offline)."""
    from onlymine.models import load_model, spec_available

    ok, detail = spec_available("torchvision:mobilenet_v2")
    if not ok:
        pytest.skip(f"MobileNetV2 weights unavailable: {detail}")
    return load_model("torchvision:mobilenet_v2")


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory) -> list[Path]:
    """20 distinct real photos made from the repository's own samples/ (crops of its four public-domain and CC0
    photos, saved as JPEG and PNG): for tests that need real photos but not the kit's labels or models."""
    from PIL import Image

    out = tmp_path_factory.mktemp("samples")
    files = []
    for i in range(20):
        src = sorted(SAMPLES.glob("*.png"))[i % 4]
        with Image.open(src) as im:
            im = im.convert("RGB")
            w, h = im.size
            k = i // 4
            crop = im.crop((k * w // 20, k * h // 25, w - k * w // 30, h - k * h // 40))
            path = out / f"{src.stem}_{i:02d}.{'jpg' if i % 2 else 'png'}"
            crop.save(path, **({"quality": 95} if i % 2 else {}))
        files.append(path)
    return files
