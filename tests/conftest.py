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
# The ImageNet class (torchvision index) that three samples show and MobileNetV2 predicts on them (so do
# EfficientNet-Lite1/2; Lite0 calls the cat a tiger cat): labels for tests of a protocol's mechanics. Accuracy
# figures need the kit's labelled photos. (astronaut.png, Eileen Collins = the kit's faces/collins_1.png, and
# camera.png have one face each.)
SAMPLE_LABELS = {"coffee.png": 967, "camera.png": 872, "chelsea.png": 285}  # espresso, tripod, Egyptian cat


def labelled_samples(dest: Path, names: dict[str, str] | None = None) -> Path:
    """The SAMPLE_LABELS photos copied into ``dest`` with a labels.csv (``file,label``), the layout of the kit's
    photos/imagenet; ``names`` renames them (sample -> file name, e.g. ``foolbox_00_967.png``) and picks which."""
    import shutil

    names = names or {n: n for n in SAMPLE_LABELS}
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for src, name in names.items():
            shutil.copy(SAMPLES / src, dest / name)
            w.writerow([name, SAMPLE_LABELS[src]])
    return dest


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


@pytest.fixture(scope="session")
def face_group(tmp_path_factory) -> Path:
    """A real "group photo" of 4 faces made from samples/ (2x2: Collins, the cameraman, then both mirrored; 256 px
    tiles): MTCNN and BlazeFace find all four faces, NudeNet three."""
    from PIL import Image, ImageOps

    with Image.open(SAMPLES / "astronaut.png") as a, Image.open(SAMPLES / "camera.png") as c:
        collins, cameraman = a.convert("RGB").crop((96, 0, 352, 256)), c.convert("RGB").crop((100, 40, 356, 296))
    group = Image.new("RGB", (512, 512))
    for tile, xy in ((collins, (0, 0)), (cameraman, (256, 0)), (ImageOps.mirror(cameraman), (0, 256)),
                     (ImageOps.mirror(collins), (256, 256))):
        group.paste(tile, xy)
    path = tmp_path_factory.mktemp("group") / "group_of_4.png"
    group.save(path)
    return path
