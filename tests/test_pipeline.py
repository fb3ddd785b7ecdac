"""The differentiable pipeline against the published one (torchvision transforms on PIL images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from onlymine import io
from onlymine.models import ModelCfg, load_model
from onlymine.models.pipeline import Pipeline

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def photos() -> dict[str, Image.Image]:
    """A non-square photo (451 x 300), a 224 x 224 one, a small one (upscaled by the pipeline), a tall one."""
    chelsea = Image.open(SAMPLES / "chelsea.png").convert("RGB")
    coffee = Image.open(SAMPLES / "coffee.png").convert("RGB")
    return {"chelsea-451x300": chelsea, "coffee-224x224": coffee.resize((224, 224), Image.Resampling.LANCZOS),
            "coffee-97x61": coffee.resize((97, 61), Image.Resampling.BOX),
            "coffee-tall-150x400": coffee.crop((0, 0, 150, 400))}


def as_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("pipeline", [
    Pipeline(256, (224, 224), "bilinear"),
    Pipeline(292, (260, 260), "bicubic", (0.498,) * 3, (0.502,) * 3),
    Pipeline((224, 224), None, "bilinear"),
    Pipeline(232, (224, 224), "nearest"),
], ids=["resize256-crop224-bilinear", "lite2-bicubic", "stretch", "nearest"])
def test_differentiable_pipeline_matches_torchvision_on_pil(pipeline):
    ref = pipeline.reference()
    for name, im in photos().items():
        want = ref(im)
        got = pipeline.apply([as_tensor(im)])[0]
        assert got.shape == want.shape, name
        levels = ((got - want) * torch.tensor(pipeline.std).view(3, 1, 1) * 255).abs()
        # Pillow rounds in fixed point: a value within float error of a half level may round the other way
        assert float(levels.max()) <= 1.01, name
        assert float((levels > 0.5).float().mean()) < 5e-3, name


def test_gradient_reaches_every_pixel_the_crop_reads():
    x = torch.rand(3, 300, 451, requires_grad=True)
    p = Pipeline(256, (224, 224), "bilinear")
    p.apply([x]).sum().backward()
    g = x.grad.abs().sum(0)
    rows, cols = torch.nonzero(g.sum(1)).flatten(), torch.nonzero(g.sum(0)).flatten()
    # 451 x 300 -> 384 x 256, crop 224 x 224 in the middle: the middle ~263 rows and columns the crop reads
    assert 255 < int(rows.numel()) < 275 and 255 < int(cols.numel()) < 275
    assert bool((g[int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1] > 0).all())


def test_model_cfg_derives_the_resize_from_crop_pct():
    assert ModelCfg("m", crop_pct=224 / 256).pipeline().resize == 256
    assert ModelCfg("m", input_size=(240, 240), crop_pct=240 / 272, resize_size=272).pipeline().resize == 272
    stretch = ModelCfg("m", input_size=(64, 48), crop_pct=None).pipeline()
    assert stretch.resize == (64, 48) and stretch.crop is None


def test_torchvision_spec_publishes_its_weights_transforms(mobilenet):
    from torchvision.models import MobileNet_V2_Weights

    pub = mobilenet.published
    assert type(pub).__name__ == "ImageClassification"
    tv = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    ours = mobilenet.cfg.pipeline().reference()
    for im in photos().values():
        assert torch.equal(pub(im), tv(im)) and torch.equal(ours(im), tv(im))


@pytest.mark.parametrize("spec", ["torchvision:mobilenet_v2", "efficientnet-lite:lite0"])
def test_both_pipelines_give_the_same_logits_on_real_models(spec):
    from onlymine.models import spec_available

    ok, detail = spec_available(spec)
    if not ok:
        pytest.skip(detail)
    clf = load_model(spec)
    for name, im in photos().items():
        ref = clf.published_logits([im])[0]
        with torch.no_grad():
            got = clf(as_tensor(im)[None])[0]
        assert int(got.argmax()) == int(ref.argmax()), name
        assert float((got - ref).abs().max()) < 0.05, name


def test_lite_published_pipeline_is_bicubic_resize_plus_32_and_centre_crop():
    from onlymine.models import spec_available

    if not spec_available("efficientnet-lite:lite1")[0]:
        pytest.skip("EfficientNet-Lite1 weights unavailable")
    clf = load_model("efficientnet-lite:lite1")
    want = T.Compose([T.Resize(272, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(240), T.ToTensor(),
                      T.Normalize([127 / 255] * 3, [128 / 255] * 3)])
    im = photos()["chelsea-451x300"]
    assert torch.allclose(clf.published(im), want(im), atol=1e-6)


def test_open_rgb_and_to_pil_round_trip(tmp_path):
    x = io.quantize(torch.rand(3, 20, 30))
    io.save_image(tmp_path / "a.png", x)
    assert torch.equal(as_tensor(io.open_rgb(tmp_path / "a.png")), x)
    assert torch.equal(as_tensor(io.to_pil(x)), x)
