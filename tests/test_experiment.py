"""End to end: `onlymine experiment imagenet` on 3 labelled sample photos, resume, `onlymine evaluate`,
random-init smoke."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import labelled_samples
from onlymine.cli import main

MODELS = ["torchvision:mobilenet_v2", "efficientnet-lite:lite0"]
TRANSFORMS = ["crop", "full", "jpeg75"]  # a part of the threat suite (the rest: test_evaluate.py, test_threats.py)


@pytest.fixture(scope="module")
def three_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 labelled sample photos named like the kit's (2 ``foolbox_*``, 1 ``aib_*``: the per-subset tables), with
    their labels.csv, in a new folder."""
    from onlymine.models import spec_available

    for spec in MODELS:
        ok, detail = spec_available(spec)
        if not ok:
            pytest.skip(f"{spec} unavailable: {detail}")
    return labelled_samples(tmp_path_factory.mktemp("photos"), {
        "coffee.png": "foolbox_00_967.png", "camera.png": "foolbox_01_872.png", "chelsea.png": "aib_000.png"})


@pytest.fixture(scope="module")
def experiment(three_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp")
    rc = main(["experiment", "imagenet", "-o", str(out), "--data", str(three_photos), "--models", *MODELS,
               "--methods", "clean", "fmd-paper", "uniform-noise", "--steps", "2", "--transforms", *TRANSFORMS,
               "--no-progress", "--markdown", str(out / "doc.md")])
    assert rc == 0
    return out


def test_outputs_written(experiment: Path):
    for name in ("results.json", "results.csv", "per_image.csv", "predictions.csv", "report.html", "report.md",
                 "doc.md", "figures/grid.png", "figures/protection_vs_psnr.png", "figures/bars_fmd-paper.png"):
        assert (experiment / name).is_file(), name
    for spec in ("torchvision_mobilenet_v2", "efficientnet-lite_lite0"):
        assert len(list((experiment / "fmd-paper" / spec).glob("*.png"))) == 3


def test_results_cover_the_protocol(experiment: Path):
    res = json.loads((experiment / "results.json").read_text())
    meta = res["meta"]
    assert meta["images"] == {"all": 3, "foolbox": 2, "aib": 1}
    assert 0 <= meta["restricted_images"]["all"] <= 3
    assert all(m["pretrained"] for m in meta["models"].values())
    rows = res["rows"]
    cells = {(r["method"], r["authorized"], r["judge"]) for r in rows}
    assert len(cells) == 3 * 2 * 2  # methods x authorized x judges: a 2x2 matrix per method
    for method in ("clean", "fmd-paper", "uniform-noise"):
        for t in TRANSFORMS:
            assert any(r["method"] == method and r["transform"] == t for r in rows), (method, t)
    fmd = [r for r in rows if r["method"] == "fmd-paper" and r["role"] == "authorized" and r["transform"] == "crop"
           and r["subset"] == "all"]
    assert len(fmd) == 4  # 2 authorized x (restricted, all)
    for r in fmd:  # the protect path keeps the authorized prediction on the saved file (agreement 100%)
        assert r["agreement"] == 1.0, r
        if r["restricted"] and r["n_labelled"]:
            assert r["accuracy"] == 1.0, r
    jobs = {(j["method"], j["authorized"]): j for j in res["jobs"]}
    assert jobs[("fmd-paper", MODELS[0])]["protect"]["failed_verification"] == 0
    assert jobs[("fmd-paper", MODELS[0])]["settings"]["config"]["steps"] == 2
    quality = [r for r in rows if r["method"] == "fmd-paper" and r["transform"] == "crop"]
    assert all(20 < r["q_psnr"] < 50 and r["q_linf"] <= 16 / 255 + 1e-6 for r in quality)
    clean_q = [r for r in rows if r["method"] == "clean" and r["transform"] == "crop" and r["subset"] == "all"]
    assert all(r["q_psnr"] == float("inf") and r["q_ssim"] == pytest.approx(1.0, abs=1e-6) for r in clean_q)


def test_markdown_states_machine_date_counts_and_paper(experiment: Path):
    md = (experiment / "doc.md").read_text()
    assert md == (experiment / "report.md").read_text()
    for s in ("**Machine:**", "**Date:**", "**Wall time", "images per subset: all 3, foolbox 2, aib 1",
              "11.97%", "| mobilenet_v2 |", "jpeg75", "full", "FMD (paper setting)", "UniformNoise"):
        assert s in md, s
    html = (experiment / "report.html").read_text()
    assert "figures/grid.png" in html and "<table>" in html
    # the time over every invocation is the manifests' per-image seconds (resumed work included)
    recorded = sum(json.loads(line)["seconds"] for f in experiment.glob("*/*/manifest.jsonl")
                   for line in f.read_text().splitlines() if line.strip())
    meta = json.loads((experiment / "results.json").read_text())["meta"]
    assert recorded > 0 and meta["protect_time_s"] == pytest.approx(recorded, abs=0.5)
    # the Markdown states the meta's figure (near recorded, above); formatting recorded itself flips the last digit
    # when the two straddle a rounding boundary
    assert f"**Protection time over every invocation:** {meta['protect_time_s'] / 60:.1f} min" in md


def test_resume_redoes_nothing(experiment: Path, three_photos: Path):
    manifest = experiment / "fmd-paper" / "torchvision_mobilenet_v2" / "manifest.jsonl"
    before = manifest.read_text()
    cache = experiment / "fmd-paper" / "torchvision_mobilenet_v2" / "evaluation.json"
    mtime = cache.stat().st_mtime_ns
    rc = main(["experiment", "imagenet", "-o", str(experiment), "--data", str(three_photos), "--models", *MODELS,
               "--methods", "clean", "fmd-paper", "uniform-noise", "--steps", "2", "--transforms", *TRANSFORMS,
               "--no-progress"])
    assert rc == 0
    assert manifest.read_text() == before
    assert cache.stat().st_mtime_ns == mtime


def test_evaluate_command_on_experiment_files(experiment: Path, three_photos: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "ev"
    rc = main(["evaluate", "--clean", str(three_photos), "--protected",
               str(experiment / "fmd-paper" / "torchvision_mobilenet_v2"), "--authorized", MODELS[0],
               "--unauthorized", MODELS[1], "--labels", str(three_photos / "labels.csv"), "--transforms", "crop",
               "jpeg75", "-o", str(out), "--no-progress"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_pairs"] == 3
    auth = [r for r in s["models"] if r["role"] == "authorized" and r["transform"] == "crop"]
    assert auth[0]["agreement"] == 1.0
    text = capsys.readouterr().out
    assert "LPIPS" in text and "jpeg75" in text


def test_bad_data_folder_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rc = main(["experiment", "imagenet", "-o", str(tmp_path / "o"), "--data", str(tmp_path / "nope")])
    assert rc == 2
    assert "nope: no such folder" in capsys.readouterr().err


def test_random_init_smoke_is_labelled_not_pretrained(three_photos: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]):
    """The VGG16/ResNet18 path with random weights (no pretrained weights offline)."""
    out = tmp_path / "rand"
    rc = main(["experiment", "imagenet", "-o", str(out), "--data", str(three_photos), "--limit", "1",
               "--models", "torchvision:resnet18:random", "torchvision:vgg16:random", "--methods", "clean",
               "fmd-paper", "--steps", "1", "--transforms", "crop", "--no-progress"])
    assert rc == 0
    assert "torchvision:vgg16:random is NOT pretrained" in capsys.readouterr().out
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["models"]["torchvision:vgg16:random"]["pretrained"] is False
    md = (out / "report.md").read_text()
    assert "NOT pretrained, random init" in md and "are NOT pretrained" in md


def test_tuning_and_test_split_of_the_kit_photos_is_disjoint_and_fixed():
    from onlymine.experiments.imagenet import TUNE_AIB, split_of

    files = [Path(f"foolbox_{i:02d}_1.jpg") for i in range(3)] + [Path(f"aib_{i:03d}.jpg") for i in range(15)] \
        + [Path("mine.jpg")]
    part = split_of(files)
    assert all(part[f] == "tune" for f in files if f.name.startswith("foolbox_"))
    aib = sorted(f for f in files if f.name.startswith("aib_"))
    assert [part[f] for f in aib] == ["tune"] * TUNE_AIB + ["test"] * (15 - TUNE_AIB)
    assert part[Path("mine.jpg")] == "test"


def test_surrogate_method_holds_the_surrogate_out_of_its_row(three_photos: Path, tmp_path: Path):
    """fmd-plus-sur: the next model of the list is the attack's surrogate, shown as such and never scored."""
    from onlymine.models import spec_available

    models = [*MODELS, "efficientnet-lite:lite1"]
    if not spec_available(models[-1])[0]:
        pytest.skip("efficientnet-lite1 weights unavailable")
    out = tmp_path / "sur"
    rc = main(["experiment", "imagenet", "-o", str(out), "--data", str(three_photos), "--limit", "1",
               "--models", *models, "--methods", "clean", "fmd-plus-sur", "--steps", "1", "--transforms", "crop",
               "--no-progress"])
    assert rc == 0
    for i, spec in enumerate(models):
        cfg = json.loads((out / "fmd-plus-sur" / spec.replace(":", "_") / "config.json").read_text())["settings"]
        assert cfg["attack"] == "fmd+" and cfg["config"]["surrogates"] == [models[(i + 1) % 3]]
    rows = [r for r in json.loads((out / "results.json").read_text())["rows"]
            if r["method"] == "fmd-plus-sur" and r["subset"] == "all" and not r["restricted"]]
    roles = {(r["authorized"], r["judge"]): r["role"] for r in rows}
    assert roles[(models[0], models[1])] == "surrogate" and roles[(models[0], models[2])] == "unauthorized"
    assert roles[(models[2], models[0])] == "surrogate" and roles[(models[0], models[0])] == "authorized"
    assert "| surrogate |" in (out / "report.md").read_text()


def test_held_out_mean_compares_on_the_surrogate_rows_cells_and_two_models_are_refused(
        three_photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from types import SimpleNamespace

    from onlymine.experiments import aggregate
    from onlymine.report import MatrixRow

    a, b, c = "m:a", "m:b", "m:c"
    rows = {"plain": [MatrixRow(a, {a: 1.0, b: 0.2, c: 0.6}), MatrixRow(b, {a: 0.4, b: 1.0, c: 0.0})],
            "sur": [MatrixRow(a, {a: 1.0, c: 0.1}, surrogates=(b,)), MatrixRow(b, {a: 0.3, b: 1.0}, surrogates=(c,))]}
    monkeypatch.setattr(aggregate, "matrix", lambda res, method, *args: rows[method])
    assert aggregate.held_out_mean(SimpleNamespace(), "plain", "sur") == pytest.approx((0.6 + 0.4) / 2)
    rc = main(["experiment", "imagenet", "-o", str(tmp_path / "two"), "--data", str(three_photos), "--limit", "1",
               "--models", *MODELS, "--methods", "clean", "fmd-plus-sur", "--steps", "1", "--no-progress"])
    assert rc == 2 and not (tmp_path / "two" / "fmd-plus-sur").exists()


def test_baseline_claim_names_the_baselines_that_do_not_count(monkeypatch: pytest.MonkeyPatch):
    """'FMD below every baseline that keeps the authorized model' must say which baselines were left out and why,
    so the claim is never vacuously true without the reader seeing it."""
    from types import SimpleNamespace

    from onlymine.experiments import aggregate

    ov = [{"method": "clean", "label": "Clean", "authorized_min": 1.0, "unauthorized_mean": 1.0},
          {"method": "uniform-noise", "label": "UniformNoise", "authorized_min": 0.97, "unauthorized_mean": 0.98},
          {"method": "fmd-paper", "label": "FMD", "authorized_min": 1.0, "unauthorized_mean": 0.48}]
    monkeypatch.setattr(aggregate, "overview", lambda *a, **k: ov)
    monkeypatch.setattr(aggregate, "matrix", lambda *a, **k: [])
    methods = [SimpleNamespace(key=o["method"], family=o["method"]) for o in ov]
    res = SimpleNamespace(protocol=SimpleNamespace(methods=methods), jobs=[])
    claim = next(c for c in aggregate.checks(res) if "below every baseline" in c[0])
    assert claim[1] is True
    assert "none qualifies" in claim[2] and "not kept: UniformNoise 98.00% (authorized min 97.00%)" in claim[2]
    ov[1]["authorized_min"] = 1.0  # now it counts, and FMD is below it
    claim = next(c for c in aggregate.checks(res) if "below every baseline" in c[0])
    assert claim[1] is True and "baselines: UniformNoise 98.00%" in claim[2] and "not kept" not in claim[2]
    ov[2]["unauthorized_mean"] = 0.99  # above a qualifying baseline: the claim fails
    assert next(c for c in aggregate.checks(res) if "below every baseline" in c[0])[1] is False


def test_two_seeds_one_authorized_model_and_a_second_report_sharing_the_cells(three_photos: Path, tmp_path: Path):
    """--seed 0 1 gives each protecting method one row per seed (its own folder); --authorized restricts who is
    authorized while every model judges; --results writes a second report without redoing the shared cells; the
    threat-suite table and its claims are in the report."""
    out = tmp_path / "seeds"
    args = ["experiment", "imagenet", "-o", str(out), "--data", str(three_photos), "--limit", "2",
            "--models", *MODELS, "--steps", "1", "--transforms", "crop", "full", "--no-progress"]
    assert main([*args, "--methods", "clean", "fmd-plus", "--authorized", MODELS[0], "--seed", "0", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [j["method"] for j in res["jobs"]] == ["clean", "fmd-plus-seed0", "fmd-plus-seed1"]
    assert {j["authorized"] for j in res["jobs"]} == {MODELS[0]}
    assert set(res["meta"]["models"]) == set(MODELS)  # both judge
    seeds = {j["method"]: j["settings"]["config"]["seed"] for j in res["jobs"] if j["method"] != "clean"}
    assert seeds == {"fmd-plus-seed0": 0, "fmd-plus-seed1": 1}
    a = (out / "fmd-plus-seed0" / "torchvision_mobilenet_v2" / "aib_000.png").read_bytes()
    b = (out / "fmd-plus-seed1" / "torchvision_mobilenet_v2" / "aib_000.png").read_bytes()
    assert a != b
    threats = {(t["method"], t["authorized"]): t for t in res["threats"]}
    row = threats[("fmd-plus-seed0", MODELS[0])]
    assert set(row["unauthorized"]) == {"crop", "full"} and row["worst"] == max(row["unauthorized"].values())
    claims = [c["claim"] for c in res["checks"]]
    assert "fmd-plus: unauthorized agreement through crop <= 10% on every row" in claims
    md = (out / "report.md").read_text()
    assert "## Threat suite" in md and "FMD+ (onlymine, eps 16), seed 1" in md
    stamp = (out / "fmd-plus-seed0" / "torchvision_mobilenet_v2" / "manifest.jsonl").stat().st_mtime_ns
    second = tmp_path / "second"
    assert main([*args, "--methods", "clean", "fmd-plus", "--seed", "0", "--results", str(second)]) == 0
    assert (out / "fmd-plus-seed0" / "torchvision_mobilenet_v2" / "manifest.jsonl").stat().st_mtime_ns == stamp
    res2 = json.loads((second / "results.json").read_text())
    assert {(j["method"], j["authorized"]) for j in res2["jobs"] if j["method"] != "clean"} == {
        ("fmd-plus-seed0", m) for m in MODELS}
    assert json.loads((out / "results.json").read_text())["jobs"] == res["jobs"]  # the first report is untouched
    assert main([*args, "--methods", "fmd-plus", "--authorized", "torchvision:nope"]) == 2
    # --report-only protects nothing and leaves out a method with an unfinished cell
    third = tmp_path / "third"
    assert main([*args, "--methods", "clean", "fmd-plus", "fmd-plus-mid", "--authorized", MODELS[0], "--seed", "0",
                 "1", "--report-only", "--results", str(third)]) == 0
    assert not (out / "fmd-plus-mid-seed0").exists()
    jobs = json.loads((third / "results.json").read_text())["jobs"]
    assert [j["method"] for j in jobs] == ["clean", "fmd-plus-seed0", "fmd-plus-seed1"]


def test_threat_claims_hold_only_when_every_row_and_seed_does():
    """The threat-suite claims read every (method, authorized) row, never an average alone; the ring bound is
    checked for every FMD+ method."""
    from onlymine.experiments.threat_report import threat_checks

    def row(method: str, auth: str, crop: float, ring: float = 1.0) -> dict:
        return {"method": method, "family": method.split("-seed")[0], "authorized": auth,
                "unauthorized": {"crop": crop, "full": 0.05, "jpeg75": 0.05}, "worst": max(crop, 0.05),
                "authorized_kept": {"crop": 1.0, "full": 0.2}, "ring_ratio": ring, "psnr": 26.0, "ssim": 0.7}

    good = [row("fmd-plus-seed0", "a", 0.08), row("fmd-plus-seed1", "a", 0.09)]
    checks = {c: h for c, h, _ in threat_checks(good)}
    assert checks["fmd-plus: unauthorized agreement through crop <= 10% on every row"] is True
    assert checks["fmd-plus: no visible frame (ring ratio between 0.8 and 1.25) on every row"] is True
    bad = [*good, row("fmd-plus-seed1", "b", 0.12, ring=0.5), {**good[0], "authorized": "average", "worst": 0.0}]
    checks = {c: h for c, h, _ in threat_checks(bad)}
    assert checks["fmd-plus: unauthorized agreement through crop <= 10% on every row"] is False
    assert checks["fmd-plus: no visible frame (ring ratio between 0.8 and 1.25) on every row"] is False
    assert not any(c.startswith("fmd-plus-mid") for c in checks)  # only the methods that ran
