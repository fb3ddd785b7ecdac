"""The protect pipeline (`protect_paths` / `Protector`): outputs, manifest, verification, resume, and the end to
end check on real photos with the real MobileNetV2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onlymine import io
from onlymine.attacks import UniformNoise
from onlymine.protect import MANIFEST, Outcome, Protector, output_paths, protect_paths
from onlymine.settings import ProtectSettings
from tiny import TINY_LAYER, tiny_classifier

EPS = 16 / 255


def fast_settings(**kw) -> ProtectSettings:
    base = {"model": "tiny", "layers": [TINY_LAYER], "steps": 2, "lam": 0.01, "retries": 1}
    return ProtectSettings.build(**{**base, **kw})


def protector(**kw) -> Protector:
    return Protector(fast_settings(**kw), device="cpu", model=tiny_classifier())


def write_photo(path: Path, size: tuple[int, int] = (40, 48), mode: str = "RGB", seed: int = 0, **save) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path, **save)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def photos(tmp_path) -> Path:
    src = tmp_path / "in"
    write_photo(src / "a.png", seed=1)
    write_photo(src / "b.jpg", seed=2, quality=95)
    write_photo(src / "sub" / "c.png", size=(33, 29), seed=3)
    return src


# ------------------------------------------------------------------------------------------ outputs, manifest
def test_protects_folder_into_mirrored_tree_and_writes_manifest(photos, tmp_path):
    out = tmp_path / "out"
    before = tree_hashes(photos)
    summary = protect_paths([photos], out, fast_settings(), progress=False, protector=protector())
    assert summary.ok and summary.count("ok") == 3
    assert {p.name for p in out.rglob("*.png")} == {"a.png", "b.png", "c.png"}
    assert (out / "sub" / "c.png").is_file()
    assert tree_hashes(photos) == before  # inputs never modified
    rows = io.read_jsonl(out / MANIFEST)
    assert len(rows) == 3
    for r in rows:
        assert r["status"] == "ok" and r["sha256"] == sha(Path(r["input"]))
        assert {"input", "output", "sha256", "settings", "settings_key", "record", "verified", "attempts"} <= set(r)
        assert r["settings"]["config"]["eps"] == EPS and r["settings"]["config"]["layers"] == [TINY_LAYER]
        assert {"clean_top1", "protected_top1", "linf", "psnr", f"feat_mse[{TINY_LAYER}]",
                f"feat_rel[{TINY_LAYER}]"} <= set(r["record"])
        saved = io.load_image(r["output"]).rgb
        orig = io.load_image(r["input"]).rgb
        assert saved.shape == orig.shape  # full resolution kept
        assert float((saved - orig).abs().max()) <= EPS + 1e-6
        assert r["verified"]["linf"] == pytest.approx(float((saved - orig).abs().max()), abs=1e-6)
        assert r["verified"]["kept"] is True and r["verified"]["top1"] == r["record"]["clean_top1"]
    assert (out / "config.json").is_file()


def test_same_stem_inputs_get_distinct_outputs(tmp_path):
    src = tmp_path / "in"
    a_jpg = write_photo(src / "a.jpg", seed=1)
    a_png = write_photo(src / "a.png", seed=2)
    x = write_photo(tmp_path / "x" / "p.jpg", seed=3)
    y = write_photo(tmp_path / "y" / "p.jpg", seed=4)
    out = tmp_path / "out"
    summary = protect_paths([src, x, y], out, fast_settings(), progress=False, protector=protector())
    assert summary.count("ok") == 4
    rows = {r["input"]: Path(r["output"]) for r in io.read_jsonl(out / MANIFEST)}
    assert rows[str(a_png)] == out / "a.png"
    assert rows[str(a_jpg)] == out / "a.jpg.png"
    assert len(set(rows.values())) == 4 and all(p.is_file() for p in rows.values())
    assert rows[str(x)].name.startswith("p.jpg.") and rows[str(x)] != rows[str(y)]
    # each output is the protected copy of its own input
    for inp, outp in rows.items():
        assert float((io.load_image(outp).rgb - io.load_image(inp).rgb).abs().max()) <= EPS + 1e-6
    # and the names are deterministic
    again = output_paths([a_jpg, a_png, x, y], {a_jpg: src, a_png: src}, out, "png")
    assert again == {Path(k): v for k, v in rows.items()}


def test_alpha_is_kept_unperturbed(tmp_path):
    src = write_photo(tmp_path / "rgba.png", mode="RGBA", seed=5)
    out = tmp_path / "out"
    assert protect_paths([src], out, fast_settings(), progress=False, protector=protector()).ok
    saved = io.load_image(out / "rgba.png")
    orig = io.load_image(src)
    assert saved.alpha is not None and torch.equal(saved.alpha, orig.alpha)


def test_existing_outputs_are_never_overwritten_without_resume(photos, tmp_path):
    out = tmp_path / "out"
    protect_paths([photos], out, fast_settings(), progress=False, protector=protector())
    before = tree_hashes(out)
    summary = protect_paths([photos], out, fast_settings(seed=1), progress=False, protector=protector(seed=1))
    assert not summary.ok and summary.count("error") == 3
    assert all("already exists" in o.message for o in summary.outcomes)
    after = tree_hashes(out)
    assert {k: v for k, v in after.items() if k.endswith(".png")} == {
        k: v for k, v in before.items() if k.endswith(".png")}


def test_jpeg_output(photos, tmp_path):
    out = tmp_path / "out"
    summary = protect_paths([photos], out, fast_settings(fmt="jpeg"), progress=False,
                            protector=protector(fmt="jpeg"))
    assert summary.count("ok") + summary.count("failed") == 3
    assert {p.name for p in out.rglob("*.jpg")} == {"a.jpg", "b.jpg", "c.jpg"}


def test_flipped_saved_file_is_retried_then_reported_failed(photos, tmp_path):
    prot = protector(retries=2)
    real_predict = prot.model.predict_published
    calls = []

    def flipped(images):  # the clean label is the model's own; every saved file is seen as another class
        cls, conf = real_predict(images)
        calls.append(len(images))
        return (cls + (len(calls) > 1)) % 5, conf

    prot.model.predict_published = flipped
    out = tmp_path / "out"
    seen: list[Outcome] = []
    summary = protect_paths([photos / "a.png"], out, prot.settings, progress=False, protector=prot,
                            on_outcome=seen.append)
    assert not summary.ok and summary.count("failed") == 1
    (o,) = seen
    assert "a.png" in o.message and "not kept" in o.message
    assert o.row["attempts"] == 3 and o.row["status"] == "failed"
    assert io.read_jsonl(out / MANIFEST)[0]["status"] == "failed"


def test_verification_uses_the_published_pipeline_not_the_attacks_copy(photos, tmp_path):
    """A saved file the differentiable pipeline keeps but the published transform does not is caught."""
    prot = protector(retries=1)
    clean_pil = io.open_rgb(photos / "a.png")
    own = prot.model.published
    target = int(prot.model.predict_published([clean_pil])[0][0])
    other = torch.zeros(1, 3, 32, 32, requires_grad=True)  # an input the tiny model reads as another class
    for _ in range(50):
        (g,) = torch.autograd.grad(prot.model.run_net(other)[0, (target + 1) % 5], other)
        other = (other + 0.5 * g.sign()).detach().requires_grad_(True)
    other = other.detach()[0]

    def published(im):  # the clean photo reads as it always does; any other file as ``other``
        return own(im) if np.array_equal(np.asarray(im), np.asarray(clean_pil)) else other

    prot.model.published = published
    assert int(prot.model.predict_published([io.to_pil(torch.rand(3, 8, 8))])[0][0]) != target
    out = tmp_path / "out"
    summary = protect_paths([photos / "a.png"], out, prot.settings, progress=False, protector=prot)
    (o,) = summary.outcomes
    v = o.row["verified"]
    assert v["differentiable_top1"] == target  # the attack's own pipeline says kept ...
    assert o.status == "failed" and not v["kept"] and v["pipeline"] == "published"  # ... the published one does not
    assert o.row["attempts"] == 2


# ------------------------------------------------------------------------------------------ resume
def test_resume_after_interrupted_run(tmp_path):
    src = tmp_path / "in"
    for i in range(4):
        write_photo(src / f"p{i}.png", seed=i)
    out = tmp_path / "out"
    s = fast_settings()

    def interrupt(o: Outcome) -> None:
        if o.status == "ok":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        protect_paths([src], out, s, batch_size=1, progress=False, protector=protector(), on_outcome=interrupt)
    rows = io.read_jsonl(out / MANIFEST)
    assert [r["status"] for r in rows] == ["ok"]
    first = Path(rows[0]["output"])
    first_hash = sha(first)
    assert sorted(p.name for p in out.glob("*.png")) == [first.name]

    summary = protect_paths([src], out, s, batch_size=2, resume=True, progress=False, protector=protector())
    assert summary.ok
    assert summary.count("skipped") == 1 and summary.count("ok") == 3
    assert sha(first) == first_hash  # the done image was not redone
    rows = io.read_jsonl(out / MANIFEST)
    inputs = [r["input"] for r in rows if r["status"] == "ok"]
    assert sorted(inputs) == sorted(str(src / f"p{i}.png") for i in range(4))  # nothing duplicated
    assert len(list(out.glob("*.png"))) == 4

    # a third resume does nothing; changed settings redo everything
    again = protect_paths([src], out, s, resume=True, progress=False, protector=protector())
    assert again.count("skipped") == 4 and again.count("ok") == 0
    changed = protect_paths([src], out, fast_settings(seed=9), resume=True, progress=False,
                            protector=protector(seed=9))
    assert changed.count("ok") == 4
    # back to the first settings: the files now hold the seed-9 outputs, so they are redone, not skipped
    back = protect_paths([src], out, s, resume=True, progress=False, protector=protector())
    assert back.count("ok") == 4 and back.count("skipped") == 0


def test_resume_redoes_an_image_whose_output_was_deleted(photos, tmp_path):
    out = tmp_path / "out"
    protect_paths([photos], out, fast_settings(), progress=False, protector=protector())
    (out / "a.png").unlink()
    summary = protect_paths([photos], out, fast_settings(), resume=True, progress=False, protector=protector())
    assert summary.count("ok") == 1 and summary.count("skipped") == 2
    assert (out / "a.png").is_file()


# ------------------------------------------------------------------------------------------ real photos
def _uniform_feat_rel(model, paths: list[Path], layer: str) -> list[float]:
    atk = UniformNoise(model, eps=EPS, record_layers=[layer])
    atk.run([io.load_image(p).rgb for p in paths])
    return [r[f"feat_rel[{layer}]"] for r in atk.records]


def _check_real_run(mobilenet, paths: list[Path], out: Path, min_rel: float = 1.0, vs_noise: float = 10.0
                    ) -> list[dict]:
    settings = ProtectSettings()  # the defaults a user gets
    prot = Protector(settings, device="cpu", model=mobilenet)
    layer = prot.settings.config.layers[0]
    summary = protect_paths(paths, out, settings, batch_size=4, progress=False, protector=prot)
    rows = [r for r in io.read_jsonl(out / MANIFEST) if r.get("status")]
    assert len(rows) == len(paths)
    assert [o.message for o in summary.outcomes if o.status != "ok"] == []
    noise = dict(zip(map(str, paths), _uniform_feat_rel(mobilenet, paths, layer), strict=True))
    for r in rows:
        orig = io.load_image(r["input"]).rgb
        saved = io.load_image(r["output"]).rgb
        clean_top1 = int(mobilenet.predict([orig])[0][0])
        assert int(mobilenet.predict([saved])[0][0]) == clean_top1, r["input"]
        assert float((saved - orig).abs().max()) <= EPS + 1e-6
        assert r["verified"]["kept"] and r["verified"]["top1"] == clean_top1
        # Feature distortion: the protected features differ from the clean ones by at least the clean
        # features' own energy (rel >= 1), and by over 10x what random noise of the same budget does
        # (the figures on the kit's ImageNet photos; see the sample test for the repository's photos).
        rel = r["record"][f"feat_rel[{layer}]"]
        assert rel >= min_rel, (r["input"], rel)
        assert rel >= vs_noise * noise[r["input"]], (r["input"], rel, noise[r["input"]])
    return rows


def test_end_to_end_sample_photos_default_settings(mobilenet, sample_photos, tmp_path):
    """The same end-to-end check on any machine, on two of the repository's photos (astronaut.png as PNG,
    coffee.png saved as JPEG). The kit's 10x-noise / rel >= 1 figures do not hold on every photo: with the
    defaults, astronaut.png measured rel 0.94 (15x noise), coffee.png 1.11 (8x noise), so this asserts half that."""
    _check_real_run(mobilenet, [sample_photos[0], sample_photos[3]], tmp_path / "out", min_rel=0.45, vs_noise=4)


def test_end_to_end_real_photos_default_settings(mobilenet, kit_dir, imagenet_rows, tmp_path):
    paths = [kit_dir / "photos" / "imagenet" / r["file"] for r in imagenet_rows[:2]]
    _check_real_run(mobilenet, paths, tmp_path / "out")


@pytest.mark.slow
def test_end_to_end_every_kit_imagenet_photo(mobilenet, kit_dir, tmp_path):
    """The issue's "What it must show": every kit ImageNet photo is protected with the defaults."""
    paths = sorted((kit_dir / "photos" / "imagenet").glob("*.jpg"))
    assert len(paths) >= 80
    _check_real_run(mobilenet, paths, tmp_path / "out")
