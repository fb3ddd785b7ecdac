"""`onlymine protect` from the command line, with a tiny random-init model standing in for the real one."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from onlymine import cli, io
from onlymine.commands.protect import settings_from_args
from onlymine.settings import PLUS_PRESETS, PRESETS, ProtectSettings
from test_protect import sha, tree_hashes, write_photo
from tiny import TINY_LAYER, tiny_classifier

FAST = ["--model", "torchvision:tiny", "--layer", TINY_LAYER, "--steps", "2", "--lam", "0.01", "--no-progress"]


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    """Every model spec loads the tiny classifier (the CLI path is what is tested here)."""
    monkeypatch.setattr("onlymine.protect.load_model", lambda spec, device="cpu", **kw: tiny_classifier().to(device))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def parse(*argv: str):
    return settings_from_args(cli.build_parser().parse_args(["protect", "x", "-o", "y", *argv]))


def _png_bytes(tmp_path: Path, size=(40, 40)) -> bytes:
    return write_photo(tmp_path / "_tmp.png", size=size, seed=11).read_bytes()


def test_bad_inputs_each_get_one_line_and_good_files_are_still_protected(tmp_path, capsys):
    src = tmp_path / "in"
    write_photo(src / "good1.png", seed=1)
    write_photo(src / "deep" / "good2.jpg", seed=2)
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.jpg").write_text("this is not an image\n")
    full = write_photo(tmp_path / "full.jpg", size=(64, 64), seed=3).read_bytes()
    (src / "truncated.jpg").write_bytes(full[: len(full) // 2])
    write_photo(src / "bomb.png", size=(200, 200), seed=4)  # over --max-pixels
    # a PNG header that claims a huge image (a real decompression bomb shape): 30000x30000
    header = bytearray(_png_bytes(tmp_path))
    header[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")
    (src / "huge_header.png").write_bytes(bytes(header))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    missing = tmp_path / "missing.png"
    before = tree_hashes(src)
    out = tmp_path / "out"
    rc, stdout, stderr = run(capsys, "protect", str(src), str(notes), str(missing), "-o", str(out),
                             "--max-pixels", "10000", *FAST)
    assert rc == 1
    bad = ["empty.jpg", "text.jpg", "truncated.jpg", "bomb.png", "huge_header.png", "notes.txt", "missing.png"]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    for name in bad:
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1, (name, lines)
        assert hits[0].startswith("error: ")
    assert "empty" in next(ln for ln in lines if "empty.jpg" in ln)
    assert "too large" in next(ln for ln in lines if "bomb.png" in ln)
    assert "unsupported file type" in next(ln for ln in lines if "notes.txt" in ln)
    assert "no such file" in next(ln for ln in lines if "missing.png" in ln)
    assert (out / "good1.png").is_file() and (out / "deep" / "good2.png").is_file()
    assert "2 protected" in stdout and f"{len(bad)} unreadable" in stdout
    assert tree_hashes(src) == before
    rows = io.read_jsonl(out / "manifest.jsonl")
    assert sorted(r["status"] for r in rows) == ["error"] * len(bad) + ["ok"] * 2
    assert all(r["error"] for r in rows if r["status"] == "error")


def test_all_good_exits_zero_and_prints_configuration(tmp_path, capsys):
    src = write_photo(tmp_path / "a.png")
    out = tmp_path / "out"
    rc, stdout, _ = run(capsys, "protect", str(src), "-o", str(out), *FAST)
    assert rc == 0
    line = next(ln for ln in stdout.splitlines() if ln.startswith("configuration: "))
    printed = json.loads(line.removeprefix("configuration: "))
    saved = json.loads((out / "config.json").read_text())
    assert printed == saved["settings"]
    assert printed["layer"] == [TINY_LAYER] and printed["lam"] == 0.01 and printed["steps"] == 2
    assert printed["eps"] == PRESETS["high"]["eps"]
    row = io.read_jsonl(out / "manifest.jsonl")[0]
    assert row["settings"] == printed and row["settings_key"] == saved["settings_key"]
    assert "ok" in stdout and "a.png" in stdout


@pytest.mark.parametrize(("value", "expected"), [("16", 16 / 255), ("16/255", 16 / 255), ("0.0627", 0.0627),
                                                  ("8", 8 / 255), ("4/255", 4 / 255)])
def test_eps_units(value, expected):
    assert parse("--eps", value).eps == pytest.approx(expected, abs=1e-12)
    assert parse("--alpha", value).alpha == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("value", ["abc", "300", "1/0", "-3"])
def test_bad_eps_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["protect", "x", "-o", "y", "--eps", value])
    assert e.value.code == 2
    assert "--eps" in capsys.readouterr().err


def test_eps_16_and_16_over_255_give_identical_outputs(tmp_path, capsys):
    src = write_photo(tmp_path / "a.png")
    for tag, eps in (("int", "16"), ("frac", "16/255")):
        assert run(capsys, "protect", str(src), "-o", str(tmp_path / tag), "--eps", eps, *FAST)[0] == 0
    assert sha(tmp_path / "int" / "a.png") == sha(tmp_path / "frac" / "a.png")


def test_preset_then_explicit_flags_override():
    low = parse("--preset", "low")
    table = PLUS_PRESETS  # the default attack is FMD+
    assert low.attack == "fmd+"
    assert (low.eps, low.alpha, low.steps) == (table["low"]["eps"], table["low"]["alpha"], table["low"]["steps"])
    mixed = parse("--preset", "low", "--steps", "7", "--eps", "6")
    assert mixed.steps == 7 and mixed.eps == pytest.approx(6 / 255) and mixed.alpha == table["low"]["alpha"]
    fmd = parse("--preset", "low", "--attack", "fmd")
    assert (fmd.eps, fmd.alpha, fmd.steps) == (PRESETS["low"]["eps"], PRESETS["low"]["alpha"], PRESETS["low"]["steps"])
    assert mixed.preset == "low"
    paper = parse("--paper", "--steps", "5")
    assert paper.steps == 5 and paper.keep_best is False and paper.eps == pytest.approx(16 / 255)
    assert paper.attack == "fmd" and paper.alpha == pytest.approx(4 / 255)  # --paper is one flag away
    default = parse()
    assert default.preset == "high" and default.eps == table["high"]["eps"] and default.texture is True


def test_fast_preset_is_fmd_plus_with_a_quarter_of_the_steps():
    fast = parse("--preset", "fast")
    assert fast.attack == "fmd+" and fast.steps == PLUS_PRESETS["high"]["steps"] // 4
    assert fast.eps == pytest.approx(16 / 255) and fast.alpha == pytest.approx(2 / 255)
    with pytest.raises(ValueError, match="only for attack fmd\\+"):
        ProtectSettings.build(preset="fast", attack="fmd")
    with pytest.raises(ValueError, match="unknown preset 'extreme'"):
        ProtectSettings.build(preset="extreme")


def test_jpeg_format_warns(tmp_path, capsys):
    src = write_photo(tmp_path / "a.png")
    rc, _, stderr = run(capsys, "protect", str(src), "-o", str(tmp_path / "out"), "--format", "jpeg", *FAST)
    assert "warning" in stderr.lower() and "jpeg" in stderr.lower() and "weakens" in stderr
    assert (tmp_path / "out" / "a.jpg").is_file()
    assert rc in (0, 1)
    rc, _, stderr = run(capsys, "protect", str(src), "-o", str(tmp_path / "out2"), *FAST)
    assert "warning" not in stderr.lower()


def test_rerun_without_resume_refuses_to_overwrite_then_resume_skips(tmp_path, capsys):
    src = tmp_path / "in"
    write_photo(src / "a.png", seed=1)
    write_photo(src / "b.png", seed=2)
    out = tmp_path / "out"
    assert run(capsys, "protect", str(src), "-o", str(out), *FAST)[0] == 0
    before = {n: sha(out / n) for n in ("a.png", "b.png")}
    rc, _, stderr = run(capsys, "protect", str(src), "-o", str(out), "--seed", "5", *FAST)
    assert rc == 1 and stderr.count("already exists") == 2
    assert {n: sha(out / n) for n in before} == before
    rc, stdout, _ = run(capsys, "protect", str(src), "-o", str(out), "--resume", *FAST)
    assert rc == 0 and "2 skipped" in stdout
    assert {n: sha(out / n) for n in before} == before


def test_unknown_layer_is_one_clear_line(tmp_path, capsys):
    src = write_photo(tmp_path / "a.png")
    rc, _, stderr = run(capsys, "protect", str(src), "-o", str(tmp_path / "out"), *FAST, "--layer", "nope")
    assert rc == 2
    assert stderr.strip().startswith("onlymine: ") and "nope" in stderr and len(stderr.strip().splitlines()) == 1
