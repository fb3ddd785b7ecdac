"""Model specs, the Classifier wrapper, layer taps on several architectures, TorchScript/ONNX files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from onlymine.attacks.defaults import MEASURED
from onlymine.models import Classifier, LayerError, ModelError, load_model, parse_spec
from onlymine.models.preprocess import to_model_input
from tiny import NUM_CLASSES, tiny_net

# architecture -> its expected main stages (random init: these test the code paths, not any weights)
ARCHS = {
    "resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "mobilenet_v3_small": [f"features.{i}" for i in range(13)],
    "efficientnet_b0": [f"features.{i}" for i in range(9)],
    "densenet121": ["features.denseblock1", "features.transition1", "features.denseblock2",
                    "features.transition2", "features.denseblock3", "features.transition3", "features.denseblock4"],
    "vgg11": [f"features.{i}" for i in range(21)],
    "vit_b_16": [f"encoder.layers.encoder_layer_{i}" for i in range(12)],
}


# ------------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize(("spec", "parsed"), [
    ("torchvision:mobilenet_v2", ("torchvision", "mobilenet_v2", None)),
    ("torchvision:resnet18:random", ("torchvision", "resnet18", "random")),
    ("efficientnet-lite:lite0", ("efficientnet-lite", "lite0", None)),
    ("onnx:/a/b:c.onnx", ("onnx", "/a/b:c.onnx", None)),  # file specs keep colons in the path
    ("torchscript:model.pt", ("torchscript", "model.pt", None)),
])
def test_parse_spec(spec, parsed):
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize(("spec", "message"), [
    ("mobilenet_v2", "expected SOURCE:NAME"),
    ("torchvision:", "expected SOURCE:NAME"),
    ("keras:foo", "unknown model source 'keras'"),
    ("torchvision:not_a_net", "no ImageNet classifier named 'not_a_net'"),
    ("torchvision:mobilenet_v2:NOPE", "has no weights 'NOPE'"),
    ("efficientnet-lite:lite9", "unknown EfficientNet-Lite variant 'lite9'"),
    ("onnx:/no/such/file.onnx", "no such model file"),
    ("torchscript:/no/such/file.pt", "no such model file"),
])
def test_bad_specs_raise_model_error(spec, message):
    with pytest.raises(ModelError, match=message):
        load_model(spec)


# --------------------------------------------------------------------------------- torchvision, random init
@pytest.fixture(scope="module", params=sorted(ARCHS))
def random_arch(request) -> tuple[str, Classifier]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return request.param, load_model(f"torchvision:{request.param}:random")


def test_random_init_is_never_called_pretrained(random_arch):
    _, clf = random_arch
    assert clf.cfg.pretrained is False
    assert "NOT pretrained" in clf.cfg.weights
    assert not any(p.requires_grad for p in clf.parameters())
    assert not clf.net.training


def test_stages_and_default_layer(random_arch):
    arch, clf = random_arch
    stages = clf.stages()
    assert stages == ARCHS[arch]
    default = clf.default_layer()
    assert default in stages and default not in (stages[0], stages[-1])  # mid-depth
    shapes = clf.layer_shapes(stages)
    assert list(shapes) == stages  # forward order
    assert all(len(s) >= 3 for s in shapes.values())


def test_taps_return_logits_and_features_in_one_pass_at_any_input_size(random_arch):
    _, clf = random_arch
    layer = clf.default_layer()
    expected = clf.layer_shapes([layer])[layer]
    x = torch.rand(1, 3, 97, 130, requires_grad=True)  # not the model's input size, not square
    logits, feats = clf.forward_features(x, [layer])
    assert logits.shape == (1, 1000)
    assert tuple(feats[layer].shape) == (1, *expected[1:])
    assert torch.allclose(logits, clf(x), atol=1e-5)  # the tap does not change the output
    feats[layer].float().pow(2).mean().backward()  # gradients reach the full-resolution input
    assert x.grad is not None and x.grad.shape == x.shape and float(x.grad.abs().sum()) > 0


def test_unknown_layer_names_the_layer_and_suggests():
    clf = load_model("torchvision:resnet18:random")
    with pytest.raises(LayerError, match=r"unknown layer 'layer'\. Did you mean one of: layer1"):
        clf.forward_features(torch.rand(1, 3, 64, 64), ["layer"])
    with pytest.raises(LayerError, match=r"unknown layer 'nope'\. Run `onlymine layers SPEC`"):
        clf.forward_features(torch.rand(1, 3, 64, 64), ["nope"])
    assert "nope" in str(LayerError("unknown layer 'nope'"))  # no KeyError quoting


def test_layers_lists_module_names():
    clf = load_model("torchvision:resnet18:random")
    names = clf.layers()
    assert {"conv1", "layer1", "layer1.0", "layer4.1.conv2", "fc"} <= set(names)


# ---------------------------------------------------------------------------------- preprocessing
def test_preprocess_list_of_sizes_matches_one_by_one():
    clf = load_model("torchvision:resnet18:random")
    xs = [torch.rand(3, 300, 200), torch.rand(3, 120, 160)]
    batch = to_model_input(xs, clf.cfg)
    assert batch.shape == (2, 3, 224, 224)
    for i, x in enumerate(xs):
        assert torch.allclose(batch[i], to_model_input(x.unsqueeze(0), clf.cfg)[0], atol=1e-6)


def test_real_mobilenet_config_and_prediction_matches_torchvision(mobilenet, sample_photos):
    """The wrapper's differentiable preprocessing gives torchvision's own top-1 on real photos (crops of the
    samples of every size and aspect, PNG and JPEG)."""
    from PIL import Image
    from torchvision.models import MobileNet_V2_Weights
    from torchvision.transforms.functional import pil_to_tensor

    cfg = mobilenet.cfg
    assert cfg.pretrained is True and len(cfg.class_names) == 1000
    assert cfg.input_size == (224, 224) and cfg.crop_pct == pytest.approx(224 / 256)
    assert mobilenet.stages() == [f"features.{i}" for i in range(19)]
    assert set(MEASURED[("fmd", "torchvision:mobilenet_v2")]["layers"]) <= set(mobilenet.stages())
    ref = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    agree = 0
    rows = sample_photos[:8]
    for r in rows:
        im = Image.open(r).convert("RGB")
        x = pil_to_tensor(im).float() / 255
        ours = int(mobilenet.predict(x.unsqueeze(0))[0])
        with torch.no_grad():
            theirs = int(mobilenet.net(ref(im).unsqueeze(0)).argmax())
        agree += ours == theirs
    assert agree == len(rows)


# ------------------------------------------------------------------------------ torchscript / onnx files
def _write_sidecar(path: Path, **meta) -> None:
    path.write_text(json.dumps(meta))


@pytest.fixture
def scripted(tmp_path) -> tuple[Path, torch.nn.Module]:
    net = tiny_net()
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(path))
    return path, net


def _expected_logits(net: torch.nn.Module, clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(to_model_input(x, clf.cfg))


def test_torchscript_with_sidecar(scripted):
    path, net = scripted
    (path.parent / "names.txt").write_text("\n".join(f"class{i}" for i in range(NUM_CLASSES)))
    _write_sidecar(path.with_suffix(".json"), input_size=[32, 32], mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25],
                   crop_pct=None, class_names="names.txt")
    clf = load_model(f"torchscript:{path}")
    assert clf.cfg.input_size == (32, 32) and clf.cfg.crop_pct is None
    assert clf.cfg.mean == (0.5, 0.5, 0.5) and clf.cfg.std == (0.25, 0.25, 0.25)
    assert clf.cfg.class_names == tuple(f"class{i}" for i in range(NUM_CLASSES))
    x = torch.rand(2, 3, 40, 50)
    assert torch.allclose(clf(x), _expected_logits(net, clf, x), atol=1e-5)
    # its layers can be tapped (so FMD can use it) and have the eager model's shapes
    stages = clf.stages()
    assert len(stages) >= 3
    shapes = clf.layer_shapes(stages)
    assert (1, 8, 16, 16) in shapes.values()
    _, feats = clf.forward_features(x, [clf.default_layer()])
    assert feats[clf.default_layer()].shape[0] == 2


def test_torchscript_overrides_replace_sidecar(scripted):
    path, _ = scripted
    _write_sidecar(Path(str(path) + ".json"), input_size=64, class_names=list("abcde"))
    clf = load_model(f"torchscript:{path}", input_size=[48, 40], class_names=list("vwxyz"))
    assert clf.cfg.input_size == (48, 40) and clf.cfg.class_names == tuple("vwxyz")
    assert load_model(f"torchscript:{path}").cfg.input_size == (64, 64)


def test_torchscript_tuple_output_selection(tmp_path):
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = tiny_net()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.body(x)
            return -logits, logits

    path = tmp_path / "two.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Two().eval()).save(str(path))
    _write_sidecar(path.with_suffix(".json"), input_size=[32, 32], output=1)
    clf = load_model(f"torchscript:{path}")
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(clf(x), _expected_logits(Two().body, clf, x), atol=1e-5)


def _export_onnx(path: Path, net: torch.nn.Module, output_names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, input_names=["input"],
                          output_names=output_names, dynamic_axes={"input": {0: "batch"}})


def test_onnx_with_sidecar_and_output_by_name(tmp_path):
    pytest.importorskip("onnx2torch")

    class FeatAndLogits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = tiny_net()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            feat = self.body[:4](x)
            return feat, self.body[4:](feat)

    net = FeatAndLogits().eval()
    path = tmp_path / "two.onnx"
    _export_onnx(path, net, ["feat", "logits"])
    _write_sidecar(path.with_suffix(".json"), input_size=[32, 32], class_names=list("abcde"), output="logits",
                   crop_pct=None)
    clf = load_model(f"onnx:{path}")
    x = torch.rand(3, 3, 32, 32)
    assert clf(x).shape == (3, NUM_CLASSES)
    assert torch.allclose(clf(x), _expected_logits(lambda t: net(t)[1], clf, x), atol=1e-5)
    assert clf.cfg.class_names == tuple("abcde")
    assert len(clf.stages()) >= 3
    _write_sidecar(path.with_suffix(".json"), input_size=[32, 32], output="nope")
    with pytest.raises(ModelError, match=r"no output named 'nope'.*feat.*logits"):
        load_model(f"onnx:{path}")


@pytest.mark.parametrize(("source", "content"), [
    ("onnx", b"this is not a protobuf"),
    ("torchscript", b"PK\x03\x04 not a zip archive"),
    ("onnx", b""),
    ("torchscript", b""),
])
def test_bad_model_file_raises_model_error(tmp_path, source, content):
    path = tmp_path / f"bad.{source}"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=str(path)):
        load_model(f"{source}:{path}")


def test_invalid_sidecar_json_raises_model_error(scripted):
    path, _ = scripted
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="invalid sidecar JSON"):
        load_model(f"torchscript:{path}")


def test_model_that_cannot_run_at_declared_size_raises_model_error(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 5)).eval()
    path = tmp_path / "fixed.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(path))
    _write_sidecar(path.with_suffix(".json"), input_size=[32, 32])
    assert load_model(f"torchscript:{path}")(torch.rand(1, 3, 50, 50)).shape == (1, 5)
    _write_sidecar(path.with_suffix(".json"), input_size=[20, 20])
    with pytest.raises(ModelError, match="does not run"):
        load_model(f"torchscript:{path}")
