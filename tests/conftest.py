"""Shared fixtures: the offline kit (skipped when absent) and session-wide real models."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KIT = (REPO / ".." / "shared" / "kit").resolve()


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
