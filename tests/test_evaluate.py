"""The evaluation harness (pairing, labels, transforms, judges, cache) and the shared report format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from onlymine import io, report, threats
from onlymine.evaluate import (
    TRANSFORMS,
    Evaluation,
    evaluate_folders,
    evaluate_pairs,
    pair_folders,
    quality_summary,
    read_labels,
    summarize,
)
from onlymine.judges import TopOneJudge


class BrightnessJudge(TopOneJudge):
    """A fake classifier: class = mean brightness bucket (0..9). Counts its calls."""

    def __init__(self, name: str = "bright") -> None:
        self.name = name
        self.calls = 0

    def predict(self, images):
        self.calls += 1
        return [min(9, int(float(im.mean()) * 10)) for im in images]


def _write(path: Path, value: float, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.full((3, 32, 40), value) + noise * (torch.rand(3, 32, 40, generator=g) * 2 - 1)
    io.save_image(path, x.clamp(0, 1), fmt="png" if path.suffix == ".png" else "jpeg", quality=95)
    return x


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    clean, prot = tmp_path / "clean", tmp_path / "prot"
    # a: protected copy stays in class 5; b: moved from class 2 to class 4; c: no protected copy
    _write(clean / "a.png", 0.55)
    _write(prot / "a.png", 0.55, noise=4 / 255, seed=1)
    _write(clean / "b.png", 0.25)
    _write(prot / "b.png", 0.45)
    _write(clean / "c.png", 0.75)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na.png,5\nb.png,2\nc.png,-1\n")
    return clean, prot, labels


def test_pairing_by_name_any_suffix(tmp_path: Path):
    _write(tmp_path / "c" / "x.jpg", 0.5)
    _write(tmp_path / "p" / "x.png", 0.5)
    pairs = pair_folders(tmp_path / "c", tmp_path / "p")
    assert [(p.name, p.clean.suffix, p.protected.suffix) for p in pairs] == [("x.jpg", ".jpg", ".png")]
    with pytest.raises(ValueError, match="no protected file"):
        pair_folders(tmp_path / "c", tmp_path / "c" / "nothing")


def test_read_labels_and_errors(tmp_path: Path, folders):
    _, _, labels = folders
    assert read_labels(labels) == {"a.png": 5, "b.png": 2, "c.png": -1}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cls\nx,1\n")
    with pytest.raises(ValueError, match="bad.csv.*'file' and 'label'"):
        read_labels(bad)
    with pytest.raises(ValueError, match="missing.csv"):
        read_labels(tmp_path / "missing.csv")


def test_threat_changes_are_pil_images_of_the_right_size():
    from PIL import Image

    from onlymine import threats

    g = torch.Generator().manual_seed(0)
    im = io.to_pil(io.quantize(torch.rand(3, 1300, 1531, generator=g)))
    for name, t in threats.SUITE.items():
        out = t(im)
        assert isinstance(out, Image.Image) and out.mode == "RGB", name
        want = {"half": (765, 650), "social": (1080, 917)}.get(name, im.size)
        assert out.size == want, name
    assert threats.SUITE["social"](im.resize((400, 300))).size == (400, 300)  # never upscaled
    diff = {q: float(torch.tensor(list(threats.jpeg(im, q).getdata()), dtype=torch.float).sub(
        torch.tensor(list(im.getdata()), dtype=torch.float)).abs().mean()) for q in (90, 50)}
    assert diff[50] > diff[90] > 0  # stronger JPEG changes more


def test_evaluate_pairs_accuracy_agreement_quality(folders, tmp_path: Path):
    clean, prot, labels = folders
    judge, other = BrightnessJudge("auth"), BrightnessJudge("other")
    ev = evaluate_pairs(pair_folders(clean, prot), [judge, other], authorized="auth", labels=read_labels(labels),
                        transforms=["crop", "jpeg75"], progress=False)
    assert [r["image"] for r in ev.images] == ["a.png", "b.png"]
    a, b = ev.images
    assert a["linf"] <= 4 / 255 + 1 / 255 and 30 < a["psnr"] < 60 and 0 < a["ssim"] < 1
    assert b["linf"] == pytest.approx(0.2, abs=1 / 255) and b["ssim"] < 1
    assert a["lpips"] is None or a["lpips"] >= 0
    s = {(r["transform"], r["judge"]): r for r in summarize(ev)}
    none = s[("crop", "auth")]
    assert none["role"] == "authorized" and s[("crop", "other")]["role"] == "unauthorized"
    assert none["n"] == 2 and none["n_labelled"] == 2
    assert none["accuracy"] == pytest.approx(0.5)  # a kept class 5, b moved off its label 2
    assert none["clean_accuracy"] == pytest.approx(1.0)
    assert none["agreement"] == pytest.approx(0.5)
    only_a = {(r["transform"], r["judge"]): r for r in summarize(ev, keep=lambda n: n == "a.png")}
    assert only_a[("crop", "auth")]["accuracy"] == 1.0
    assert quality_summary(ev)["n"] == 2


def test_cache_is_reused_and_invalidated(folders, tmp_path: Path):
    clean, prot, labels = folders
    pairs = pair_folders(clean, prot)
    j = BrightnessJudge()
    ev1 = evaluate_pairs(pairs, [j], labels=read_labels(labels), transforms=["crop"], cache_dir=tmp_path / "c",
                         progress=False)
    calls = j.calls
    ev2 = evaluate_pairs(pairs, [j], labels=read_labels(labels), transforms=["crop"], cache_dir=tmp_path / "c",
                         progress=False)
    assert j.calls == calls and ev2.predictions == ev1.predictions
    # a protected file changed: recompute
    io.save_image(prot / "a.png", torch.full((3, 32, 40), 0.95), overwrite=True)
    ev3 = evaluate_pairs(pairs, [j], labels=read_labels(labels), transforms=["crop"], cache_dir=tmp_path / "c",
                         progress=False)
    assert j.calls > calls
    assert ev3.predictions[0]["pred"] == 9


def test_evaluate_folders_writes_csv_and_json(folders, tmp_path: Path):
    clean, prot, labels = folders
    out = tmp_path / "out"
    summary = evaluate_folders(clean, prot, [BrightnessJudge("auth")], out, authorized="auth",
                               labels=read_labels(labels), progress=False)
    assert summary["n_pairs"] == 2
    own_read = {t for t in TRANSFORMS if threats.SUITE[t].read == "crop"}  # a judge that reads its own way
    assert {r["transform"] for r in summary["models"]} == own_read
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["quality"]["n"] == 2
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0].startswith("image,transform,judge,role")
    assert len(lines) == 1 + 2 * len(own_read)
    per_image = (out / "per_image.csv").read_text().splitlines()
    assert "psnr" in per_image[0] and len(per_image) == 3


def test_evaluation_roundtrip():
    ev = Evaluation([{"image": "x", "psnr": math.inf}], [], {"key": "k"})
    assert Evaluation.from_dict(json.loads(json.dumps(ev.to_dict()))).images[0]["psnr"] == math.inf


# ------------------------------------------------------------------------------------------ report
def _rows() -> list[report.MatrixRow]:
    return [report.MatrixRow("m:a", {"m:a": 1.0, "m:b": 0.2, "m:c": 0.1}, {"psnr": 30.0, "ssim": 0.8}, 10),
            report.MatrixRow("m:b", {"m:a": 0.3, "m:b": 0.99, "m:c": 0.0}, {"psnr": 32.0, "ssim": 0.9}, 10)]


def test_paper_table_shape_and_values():
    t = report.paper_table(_rows(), ["m:a", "m:b", "m:c"], caption="cap")
    md = t.markdown()
    assert md.startswith("cap\n")
    assert t.headers[:3] == ["Authorized", "n", "Authorized accuracy (%)"]
    assert t.rows[0] == ["a", "10", "100.00", "—", "20.00", "10.00", "**15.00**", "30.00", "0.8000"]
    assert t.rows[1][6] == "**15.00**" and t.rows[1][3] == "30.00" and t.rows[1][4] == "—"
    assert t.rows[2][0] == "Average" and t.rows[2][2] == "99.50" and t.rows[2][6] == "**15.00**"
    assert t.rows[2][7] == "31.00"
    assert "<b>15.00</b>" in t.html()
    assert report.percent(None) == "n/a" and report.number(math.inf) == "inf"


def test_csv_json_html_and_figures(tmp_path: Path):
    report.write_csv(tmp_path / "r.csv", [{"a": 1, "b": [1, 2]}, {"a": 2, "c": None}])
    assert (tmp_path / "r.csv").read_text().splitlines() == ["a,b,c", '1,"[1, 2]",', "2,,"]
    report.write_json(tmp_path / "r.json", {"x": math.inf})
    assert json.loads((tmp_path / "r.json").read_text())["x"] == math.inf
    x = torch.rand(3, 20, 30)
    y = (x + 16 / 255 * torch.sign(torch.randn(3, 20, 30))).clamp(0, 1)
    d = report.amplified_difference(x, y, 16 / 255)
    assert float(d.min()) >= 0 and float(d.max()) <= 1 and float(d.max()) > 0.95
    figs = [report.image_grid(tmp_path / "f" / "grid.png", [("x", x, y)], 16 / 255),
            report.bar_plot(tmp_path / "f" / "bars.png", _rows(), ["m:a", "m:b", "m:c"]),
            report.scatter_plot(tmp_path / "f" / "sc.png", [("FMD", 30.0, 0.15), ("PGD", None, 0.1)])]
    for f in figs:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.html_report(tmp_path / "r.html", "Title <x>", [
        report.Section("S", "para one\n\npara two", [report.paper_table(_rows(), ["m:a", "m:b"])], ["f/grid.png"])],
        {"machine": "test"}).read_text()
    assert "Title &lt;x&gt;" in page and "<table>" in page and "src='f/grid.png'" in page and "para two" in page
