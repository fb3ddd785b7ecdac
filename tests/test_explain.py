"""Grad-CAM (pytorch-grad-cam on our Classifier) and the top-1 confidence figure."""

from __future__ import annotations

import pytest
import torch

from conftest import SAMPLES
from onlymine import io


@pytest.fixture(scope="module")
def photos():
    return [io.load_image(SAMPLES / n).rgb for n in ("chelsea.png", "coffee.png")]  # a cat, a cup of espresso


def test_heatmap_explains_the_models_top1_at_input_size(mobilenet, photos):
    from onlymine.explain import heatmap

    top1, _ = mobilenet.predict(photos)
    maps = []
    for img, cls in zip(photos, top1.tolist(), strict=True):
        m, explained = heatmap(mobilenet, img)
        assert m.shape == tuple(mobilenet.cfg.input_size)
        assert m.min() >= 0 and m.max() <= 1 and m.max() - m.min() > 0.5  # a real map, not a constant
        assert explained == cls
        maps.append(torch.from_numpy(m))
    assert (maps[0] - maps[1]).abs().mean() > 0.05  # different photos, different attention
    with pytest.raises(ValueError, match="no module"):
        heatmap(mobilenet, photos[0], layer="features.99")


def test_gradcam_grid_and_confidence_figure(mobilenet, photos, tmp_path):
    from PIL import Image

    from onlymine.explain import confidence_figure, confidence_rows, gradcam_grid
    from onlymine.judges import ClassifierJudge

    noisy = [(x + 0.1 * torch.randn_like(x)).clamp(0, 1) for x in photos]
    items = [(f"p{i}", c, p) for i, (c, p) in enumerate(zip(photos, noisy, strict=True))]
    grid = gradcam_grid(tmp_path / "g.png", items, [mobilenet], mobilenet.name)
    with Image.open(grid) as im:
        assert im.width > im.height  # 2 rows x 3 columns
    judge = ClassifierJudge(mobilenet)
    rows = confidence_rows(items, [judge], mobilenet.name)
    assert len(rows) == 2 * 2 and {r["version"] for r in rows} == {"clean", "protected"}
    clean = [r["confidence"] for r in rows if r["version"] == "clean"]
    assert clean == pytest.approx(judge.confidences(photos))
    assert confidence_figure(tmp_path / "c.png", rows, mobilenet.name).stat().st_size > 1000
