"""``onlymine experiment faces``: a small end-to-end run on kit photos, the report, and the claims table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onlymine import cli
from onlymine.experiments import face_scores as scores
from onlymine.experiments import faces as fx
from onlymine.faces import kit


def _row(task: str, method: str, auth: str, judge: str, correct: float, kept: float) -> dict:
    return {"task": task, "method": method, "authorized": auth, "judge": judge,
            "judge_task": "identity" if task == "identity" else "emotion", "photo": "p.jpg", "face": 0,
            "real_probe": False, "correct": correct, "clean_correct": 1.0, "kept": kept}


def test_claims_table_says_what_holds_and_by_how_much() -> None:
    preds = [
        _row("identity", "fmd", "kit:a", "kit:a", 1.0, 1.0),  # authorized keeps identity
        _row("identity", "fmd", "kit:a", "kit:b", 0.0, 0.0),  # unauthorized fooled: 100-point drop
        _row("identity", "fmd+", "kit:a", "kit:a", 0.0, 0.0),  # authorized lost: claim fails
        _row("identity", "fmd+", "kit:a", "kit:b", 1.0, 1.0),
        _row("identity", "uniform-noise", "kit:a", "kit:b", 1.0, 1.0),
    ]
    t = scores.claims({"predictions": preds}, [("region border pixels", 0.0),
                                               ("ring 0-8 px outside the region", 0.1)])
    verdict = {r[0]: r[1] for r in t.rows}
    assert verdict["identity, fmd: the authorized model identifies >= 99% of faces on the saved files"] == "yes"
    assert verdict["identity, fmd+: the authorized model identifies >= 99% of faces on the saved files"] == "no"
    drops = {r[0]: (r[1], r[2]) for r in t.rows if "fall well below" in r[0]}
    assert drops["identity, fmd: unauthorized recognisers fall well below their clean rate"][0] == "yes"
    assert "100.00 points" in drops["identity, fmd: unauthorized recognisers fall well below their clean rate"][1]
    assert drops["identity, fmd+: unauthorized recognisers fall well below their clean rate"][0] == "no"
    assert verdict["a face in a group photo is pasted back with no seam at the crop border"] == "yes"
    t = scores.claims({"predictions": preds}, [("region border pixels", 3.0)])
    seam = "a face in a group photo is pasted back with no seam at the crop border"
    assert {r[0]: r[1] for r in t.rows}[seam] == "no"


def test_identities_of_group_photo_uses_the_named_cast() -> None:
    row = {"file": "g.jpg", "label": "unknown_group", "note": "left to right: Ann Lee, Bo"}
    assert fx.identities_of(row, 2) == ["ann_lee", "bo"]
    assert fx.identities_of(row, 3) == ["g#1", "g#2", "g#3"]  # names do not match the faces found
    assert fx.identities_of({"file": "x.png", "label": "obama"}, 1) == ["obama"]


def test_small_faces_experiment_end_to_end(kit_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("facenet_pytorch")
    out = tmp_path / "faces"
    docs = tmp_path / "docs" / "results-faces.md"
    try:
        rc = cli.main(["experiment", "faces", "-o", str(out), "--kit", str(kit_dir), "--max-photos", "2",
                       "--steps", "2", "--methods", "fmd", "--recognisers", "faceapi_recognition",
                       "--emotion-models", "kit:human_emotion", "--no-progress", "--docs", str(docs)])
    finally:
        kit.set_kit_dir(None)
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert {(r["task"], r["authorized"]) for r in res["runs"]} == {
        ("identity", "kit:faceapi_recognition"), ("emotion", "kit:human_emotion")}
    assert res["meta"]["n_photos"] == 2
    auth = [r for r in res["predictions"] if r["judge"] == r["authorized"]]
    assert auth and all(r["kept"] == 1.0 for r in auth)  # verified on the saved files
    for run in res["runs"]:
        assert len(list(Path(run["dir"]).glob("*.png"))) == 2
    md = (out / "report.md").read_text()
    assert "What the issue asks this run to show" in md and "## Identity: FMD" in md and "## Emotion: FMD" in md
    assert docs.read_text().count("| ") > 10 and (out / "report.html").is_file()
    # --report-only rewrites the report from results.json without protecting again
    (out / "report.md").unlink()
    rc = cli.main(["experiment", "faces", "-o", str(out), "--kit", str(kit_dir), "--max-photos", "2",
                   "--report-only", "--docs", str(docs)])
    kit.set_kit_dir(None)
    assert rc == 0 and (out / "report.md").read_text() == md


def test_surrogate_method_holds_each_judge_out_of_its_own_run(kit_dir: Path, tmp_path: Path) -> None:
    """fmd+sur: one run per held-out recogniser, the others as surrogates, scored by the authorized model and
    the held-out one only (--authorized: one authorized model, the other recognisers stay judges/surrogates)."""
    pytest.importorskip("facenet_pytorch")
    out = tmp_path / "faces"
    recs = ["faceapi_recognition", "facenet_casia_inception_resnet_v1", "human_faceres"]
    try:
        rc = cli.main(["experiment", "faces", "-o", str(out), "--kit", str(kit_dir), "--max-photos", "1",
                       "--plus-steps", "1", "--methods", "fmd+sur", "--tasks", "identity", "--recognisers",
                       ",".join(recs), "--authorized", "faceapi_recognition", "--no-progress"])
    finally:
        kit.set_kit_dir(None)
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 2  # 1 authorized x 2 held out
    assert {r["authorized"] for r in res["runs"]} == {"kit:faceapi_recognition"}
    for run in res["runs"]:
        held = run["dir"].rsplit("heldout-", 1)[1].replace("_", ":", 1)
        assert held != run["authorized"] and held not in run["surrogates"]
        assert sorted([run["authorized"], held, *run["surrogates"]]) == sorted(f"kit:{r}" for r in recs)
        cfg = json.loads((Path(run["dir"]) / "config.json").read_text())["settings"]
        assert cfg["attack"] == "fmd+" and cfg["config"]["surrogates"] == run["surrogates"]
        judged = {r["judge"] for r in res["predictions"] if r["authorized"] == run["authorized"]
                  and r["judge"] not in (run["authorized"],)}
        assert judged == {f"kit:{r}" for r in recs} - {run["authorized"]}  # over its two runs
    rows = scores.matrix_rows(res, "identity", "fmd+sur", "correct", "identity")
    assert [r.authorized for r in rows] == ["kit:faceapi_recognition"]  # one row for its two runs
    assert set(rows[0].scores) == {f"kit:{r}" for r in recs}
    md = (out / "report.md").read_text()
    assert "public surrogates" in md and "identity, fmd+sur: unauthorized recognisers" in md
