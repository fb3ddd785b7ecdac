"""onlymine ablate: config designs, Pareto front / recommendation, and a tiny real run (resume, outputs)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import labelled_samples
from onlymine.ablation import ConfigError, load_config, pareto_front, parse_config, recommend
from onlymine.ablation.analysis import front_gap

REPO = Path(__file__).resolve().parents[1]
STAGES = [f"features.{i}" for i in range(19)]


def _cfg(**kw):
    d = {"authorized": "torchvision:mobilenet_v2", "unauthorized": ["efficientnet-lite:lite0"],
         "base": {"layer": "features.7", "eps": "16/255", "alpha": "4/255", "steps": 100, "lam": 0.01}}
    d.update(kw)
    return parse_config(d)


def test_ofat_varies_one_axis_at_a_time_around_the_base():
    cfg = _cfg(axes={"layer": ["features.3", "features.7"], "eps": ["8/255", "16/255"], "lam": [0, 1]})
    pts = cfg.points(lambda: STAGES)
    assert pts[0].axis == "base" and pts[0].layer == "features.7"
    assert len(pts) == 1 + 1 + 1 + 2  # duplicates of the base point are dropped
    assert len({p.id for p in pts}) == len(pts)
    eps8 = next(p for p in pts if p.axis == "eps")
    assert eps8.eps == pytest.approx(8 / 255) and eps8.alpha == pytest.approx(2 / 255)  # alpha follows eps
    assert all(p.lam == 0.01 for p in pts if p.axis in ("layer", "eps"))


def test_grid_is_the_full_product_and_stages_expand():
    cfg = _cfg(design="grid", axes={"layer": "stages", "eps": [4, 8], "lam": [0, 0.1, 1]})
    pts = cfg.points(lambda: STAGES)
    assert len(pts) == 1 + 19 * 2 * 3
    every = _cfg(axes={"layer": {"every": 6}}).points(lambda: STAGES)
    assert sorted(p.layer for p in every if p.axis == "layer") == sorted(
        ["features.0", "features.6", "features.12", "features.18"])


def test_variants_design_changes_the_base_per_variant_and_repeats_seeds():
    cfg = _cfg(design="variants", seeds=[0, 1], split="tune", transforms=["jpeg75"],
               variants={"paper": {"attack": "fmd", "keep_best": False},
                         "plus": {"attack": "fmd+", "layer": ["features.4", "features.11"], "eps": 8,
                                  "momentum": 0}})
    pts = cfg.points(lambda: STAGES)
    assert [p.id for p in pts] == ["paper_s0", "paper_s1", "plus_s0", "plus_s1"]
    plus = pts[2].params()
    assert plus["layer"] == ["features.4", "features.11"] and plus["eps"] == pytest.approx(8 / 255)
    assert plus["attack"] == "fmd+" and plus["momentum"] == 0 and plus["seed"] == 0
    assert pts[0].params()["layer"] == ["features.7"] and pts[1].params()["seed"] == 1
    assert cfg.split == "tune" and cfg.transforms == ["jpeg75"]
    with pytest.raises(ConfigError, match="variants"):
        _cfg(design="variants")
    with pytest.raises(ConfigError, match="split"):
        _cfg(split="holdout")


def test_the_shipped_configs_cover_what_the_issue_asks():
    cfg = load_config(REPO / "configs" / "ablation-mobilenet_v2.yaml")
    pts = cfg.points(lambda: STAGES)
    assert len({p.layer for p in pts}) >= 5 and len({p.eps for p in pts}) >= 4 and len({p.lam for p in pts}) >= 4
    assert cfg.unauthorized == ["efficientnet-lite:lite0", "efficientnet-lite:lite1", "efficientnet-lite:lite2"]
    for f in sorted((REPO / "configs").glob("defaults-*.yaml")):
        d = load_config(f)
        assert d.authorized not in d.unauthorized and len(d.unauthorized) == 3, f


def test_bad_configs_name_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("authorized: torchvision:mobilenet_v2\nfoo: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key"):
        load_config(bad)
    bad.write_text("authorized: x\naxes: {depth: [1]}\n")
    with pytest.raises(ConfigError, match="unknown axis"):
        load_config(bad)
    bad.write_text("authorized: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="eps"):
        _cfg(axes={"eps": ["sixteen"]}).points(lambda: STAGES)


def _row(i, psnr, unauth, kept=1.0, eps=16.0):
    return {"id": str(i), "psnr": psnr, "unauthorized_accuracy": unauth, "authorized_agreement": kept,
            "eps_255": eps, "steps": 100}


def test_pareto_front_and_recommendation():
    rows = [_row(0, 30, 0.5), _row(1, 32, 0.4), _row(2, 28, 0.1), _row(3, 29, 0.3), _row(4, 35, 0.05, kept=0.5),
            _row(5, 40, 0.9, eps=4.0)]
    front = pareto_front([r for r in rows if r["authorized_agreement"] == 1.0])
    assert [r["id"] for r in front] == ["2", "3", "1", "5"]  # 0 is dominated by 1
    assert front_gap(rows[0], front) == pytest.approx(0.1)
    assert front_gap(rows[1], front) == 0
    rec = recommend(rows, base_eps_255=16.0)
    assert rec["id"] == "2"  # lowest unauthorized accuracy at the base budget; 4 flips the authorized model
    assert recommend(rows, base_eps_255=16.0, min_psnr=31)["id"] == "1"
    assert recommend(rows, base_eps_255=16.0, min_authorized=0.5)["id"] == "4"
    assert recommend(rows, base_eps_255=2.0) is None


def test_tiny_real_run_writes_rows_figures_and_resumes(mobilenet, tmp_path, capsys):
    from onlymine.cli import main

    labelled_samples(tmp_path / "photos", {"coffee.png": "coffee.png"})  # a real photo and its ImageNet label
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\nauthorized: torchvision:mobilenet_v2\nunauthorized: [efficientnet-lite:lite0]\n"
                   "data: photos\nbase: {layer: features.7, eps: 16/255, alpha: 4/255, steps: 1, lam: 0.01}\n"
                   "axes: {lam: [0]}\nexplain: {images: 1}\n")
    out, md = tmp_path / "out", tmp_path / "doc" / "ablations.md"
    argv = ["ablate", str(cfg), "-o", str(out), "--markdown", str(md), "--no-progress"]
    assert main(argv) == 0
    with open(out / "tiny" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["axis"] for r in rows] == ["base", "lam"]
    for r in rows:
        assert float(r["authorized_agreement"]) == 1.0  # verified on the saved files
        assert 0 <= float(r["lite0_accuracy"]) <= 1 and float(r["unauthorized_accuracy"]) == float(r["lite0_accuracy"])
        assert 15 < float(r["psnr"]) < 60 and 0 < float(r["ssim"]) <= 1
        assert float(r["linf_max_255"]) <= 16.0 + 1e-3 and float(r["seconds_per_image"]) > 0
    for name in ("ablation-tiny-pareto.png", "ablation-tiny-lam.png", "gradcam-tiny.png", "confidence-tiny.png"):
        assert (md.parent / "img" / name).stat().st_size > 1000
    text = md.read_text()
    assert "## Recommendation" in text and "img/ablation-tiny-pareto.png" in text and "Machine:" in text
    manifests = {p: p.stat().st_mtime_ns for p in (out / "tiny" / "settings").glob("*/manifest.jsonl")}
    assert len(manifests) == 2
    capsys.readouterr()
    assert main([*argv, "--no-explain"]) == 0  # resumed: nothing is protected again
    assert {p: p.stat().st_mtime_ns for p in manifests} == manifests


def test_cli_reports_a_bad_config(tmp_path, capsys):
    from onlymine.cli import main

    missing = tmp_path / "nope.yaml"
    assert main(["ablate", str(missing), "-o", str(tmp_path / "o")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_a_shared_setting_the_point_attack_lacks_is_left_out_and_removed_techniques_are_gone():
    from onlymine.ablation.runner import point_settings

    cfg = load_config(REPO / "configs" / "beyond-tune.yaml")
    pts = {p.variant: p for p in cfg.points(lambda: STAGES)}
    paper = point_settings(cfg, pts["paper"])  # settings: {texture: false} is FMD+'s, not FMD's
    assert paper.attack == "fmd" and paper.config.keep_best is False and paper.config.lam == 0.01
    assert point_settings(cfg, pts["fmd+"]).config.texture is False
    for f in sorted((REPO / "configs").glob("*.yaml")):
        c = load_config(f)
        for p in c.points(lambda: STAGES):
            point_settings(c, p)  # every shipped point builds (no key of a removed technique is left)
    assert load_config(REPO / "configs" / "defaults-lite0.yaml").attack == "fmd"


def test_ablation_and_the_protocol_run_their_cells_through_one_run_cell(tmp_path, monkeypatch):
    """Both protect-then-evaluate through ``onlymine.experiments.run.run_cell`` (patched here: nothing runs)."""
    from types import SimpleNamespace

    from PIL import Image

    from onlymine.ablation import runner
    from onlymine.evaluate import Evaluation
    from onlymine.experiments import run
    from onlymine.experiments.methods import METHODS

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (60 * i, 20, 0)).save(photos / f"p{i}.png")
    calls = []

    def fake_run_cell(files, names, folder, settings, protector, judges, authorized, **kw):
        calls.append((folder.relative_to(tmp_path).parts[0], settings.attack, authorized, list(names)))
        return run.CellRun(folder, settings.to_dict(), {"ok": len(files)}, {f: f for f in files}, [], Evaluation())

    class Judge:
        def __init__(self, name):
            self.name = name

        def predict(self, images):
            return [0] * len(images)

        def kept(self, clean, protected):
            return clean == protected

        def correct(self, pred, label):
            return None

    monkeypatch.setattr(run, "run_cell", fake_run_cell)
    files = sorted(photos.glob("*.png"))
    proto = run.Protocol(name="t", files=files, root=photos, authorized=["m:a"], judges=[Judge("m:a")],
                         load_model=lambda spec: pytest.fail("no model is loaded"), methods=[METHODS["clean"],
                                                                                               METHODS["fmd"]],
                         out=tmp_path / "proto", transforms=["crop"], progress=False)
    res = run.run_protocol(proto)
    assert [j.method.key for j in res.jobs] == ["clean", "fmd"] and res.job("fmd", "m:a").protect == {"ok": 2}
    models = {s: SimpleNamespace(name=s, stages=lambda: STAGES) for s in ("m:a", "m:b")}
    cfg = parse_config({"authorized": "m:a", "unauthorized": ["m:b"], "data": str(photos),
                        "base": {"layer": "features.7", "steps": 1, "lam": 0.01}, "axes": {"lam": [0]}})
    abl = runner.run_ablation(cfg, tmp_path / "abl", progress=False, models=models)
    assert [r["axis"] for r in abl.rows] == ["base", "lam"]
    assert calls == [("proto", "fmd", "m:a", ["p0.png", "p1.png"]),
                     *[("abl", "fmd+", "m:a", ["p0.png", "p1.png"])] * 2]
