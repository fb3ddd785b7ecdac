"""Dataset loaders (CelebA-HQ identity split, AffectNet CSV) on small fixture files, and `onlymine enroll`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from onlymine import io
from onlymine.faces.datasets import AFFECTNET_EXPRESSIONS, DatasetError, affectnet, celebahq_identity


def _img(path: Path) -> Path:
    io.save_image(path, torch.rand(3, 8, 8))
    return path


def test_celebahq_folder_tree_with_split_and_min_images(tmp_path: Path) -> None:
    for ident, n in (("101", 3), ("202", 1), ("303", 2)):
        for k in range(n):
            _img(tmp_path / "train" / ident / f"{k}.png")
    (tmp_path / "train" / "notes.txt").write_text("x")
    s = celebahq_identity(tmp_path, split="train")
    assert len(s) == 6 and {x.label for x in s} == {"101", "202", "303"} and s[0].split == "train"
    s2 = celebahq_identity(tmp_path, split="train", min_images=2)
    assert {x.label for x in s2} == {"101", "303"}
    assert {x.label for x in celebahq_identity(tmp_path, split="train", max_identities=1)} == {"101"}
    with pytest.raises(DatasetError, match="no images"):
        celebahq_identity(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_celebahq_mapping_file(tmp_path: Path) -> None:
    m = tmp_path / "identity_CelebA_HQ.txt"
    m.write_text("image identity\n0.jpg 7\n1.jpg 7\n2.jpg,9\n")
    s = celebahq_identity(tmp_path / "imgs", mapping=m)
    assert [(x.path.name, x.label) for x in s] == [("0.jpg", "7"), ("1.jpg", "7"), ("2.jpg", "9")]
    assert s[0].path.parent == tmp_path / "imgs"
    bad = tmp_path / "bad.txt"
    bad.write_text("0.jpg 7\nlonely\n")
    with pytest.raises(DatasetError, match=r"bad.txt:2"):
        celebahq_identity(tmp_path, mapping=bad)
    with pytest.raises(DatasetError, match="no such mapping"):
        celebahq_identity(tmp_path, mapping=tmp_path / "missing.txt")


def test_affectnet_csv_official_columns(tmp_path: Path) -> None:
    csv = tmp_path / "training.csv"
    csv.write_text(
        "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
        "689/a.jpg,10,20,100,120,,1,0.5,0.2\n"
        "689/b.jpg,0,0,50,50,,6,-0.5,0.3\n"
        "689/c.jpg,0,0,50,50,,9,0,0\n")  # 9 = uncertain: skipped
    s = affectnet(csv, tmp_path / "Manually_Annotated_Images")
    assert [(x.path.name, x.label) for x in s] == [("a.jpg", "happy"), ("b.jpg", "anger")]
    assert s[0].face is not None and s[0].face.box == (10.0, 20.0, 110.0, 140.0)
    assert s[0].path == tmp_path / "Manually_Annotated_Images" / "689" / "a.jpg"
    assert AFFECTNET_EXPRESSIONS[7] == "contempt"


def test_affectnet_generic_csv_and_errors(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nx.png,Surprise\ny.png,3\n")
    s = affectnet(csv)
    assert [x.label for x in s] == ["surprise", "surprise"] and s[0].face is None
    csv.write_text("path,label\nx.png,bored\n")
    with pytest.raises(DatasetError, match="labels.csv:2: unknown expression"):
        affectnet(csv)
    csv.write_text("file_name,mood\nx.png,1\n")
    with pytest.raises(DatasetError, match="needs an image path column"):
        affectnet(csv)


def test_enroll_command_builds_a_gallery_that_identifies_a_new_photo(kit_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("facenet_pytorch")
    from onlymine.cli import main
    from onlymine.faces import kit
    from onlymine.faces.detect import FaceDetector
    from onlymine.faces.enroll import embed
    from onlymine.faces.gallery import Gallery
    from onlymine.models import load_model

    photos = kit_dir / "photos" / "faces"
    for ident, files in (("obama", ["obama_1.jpg", "obama_2.jpg"]), ("biden", ["biden_1.jpg"]),
                         ("collins", ["collins_1.png"])):
        (tmp_path / "ids" / ident).mkdir(parents=True)
        for f in files:
            shutil.copy(photos / f, tmp_path / "ids" / ident / f)
    (tmp_path / "ids" / "collins" / "broken.jpg").write_bytes(b"not an image")
    rc = main(["enroll", str(tmp_path / "ids"), "-o", str(tmp_path / "gal"), "--kit", str(kit_dir),
               "--recogniser", "kit:faceapi_recognition"])
    assert rc == 1  # the broken file is reported, the rest is enrolled
    g = Gallery.load(tmp_path / "gal" / "kit_faceapi_recognition.npz")
    assert g.identities == ["biden", "collins", "obama"] and len(g.labels) == 4
    assert np.allclose(np.linalg.norm(g.embeddings, axis=1), 1, atol=1e-5)
    clf = load_model(f"gallery:{tmp_path / 'gal' / 'kit_faceapi_recognition.npz'}")
    im = io.load_image(photos / "obama_3.jpg").rgb  # not enrolled: a real same-person probe
    face = FaceDetector().detect(im)
    from onlymine.faces.align import chips

    top1, _ = clf.predict(chips(im, face[:1], clf.crop, clf.cfg.input_size))
    assert clf.cfg.class_names[int(top1[0])] == "obama"
    assert embed(load_model("kit:faceapi_recognition"), im, face[:1]).shape == (1, 128)
    kit.set_kit_dir(None)
