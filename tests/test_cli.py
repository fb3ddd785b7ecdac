"""`onlymine protect` from the command line, with a tiny random-init model standing in for the real one."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from onlymine import cli, io
from onlymine.attacks import FMDConfig, FMDPlusConfig
from onlymine.commands.protect import settings_from_args
from onlymine.settings import ProtectSettings
from test_protect import sha, tree_hashes, write_photo
from tiny import FAST, TINY_LAYER, run_cli, tiny_everywhere


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    tiny_everywhere(monkeypatch)


run = run_cli


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
    cfg = printed["config"]
    assert cfg["layers"] == [TINY_LAYER] and cfg["lam"] == 0.01 and cfg["steps"] == 2
    assert cfg["eps"] == FMDPlusConfig().eps
    row = io.read_jsonl(out / "manifest.jsonl")[0]
    assert row["settings"] == printed and row["settings_key"] == saved["settings_key"]
    assert "ok" in stdout and "a.png" in stdout


@pytest.mark.parametrize(("value", "expected"), [("16", 16 / 255), ("16/255", 16 / 255), ("0.0627", 0.0627),
                                                  ("8", 8 / 255), ("4/255", 4 / 255)])
def test_eps_units(value, expected):
    assert parse("--eps", value).config.eps == pytest.approx(expected, abs=1e-12)
    assert parse("--alpha", value).config.alpha == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("value", ["abc", "300", "1/0", "-3"])
def test_bad_eps_is_a_usage_error(value, capsys):
    try:  # unreadable values fail in argparse, out-of-range ones in the settings check: both exit 2, one line
        code = cli.main(["protect", "x", "-o", "y", "--eps", value])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "--eps" in err and "Traceback" not in err and "parse_budget" not in err


def test_eps_16_and_16_over_255_give_identical_outputs(tmp_path, capsys):
    src = write_photo(tmp_path / "a.png")
    for tag, eps in (("int", "16"), ("frac", "16/255")):
        assert run(capsys, "protect", str(src), "-o", str(tmp_path / tag), "--eps", eps, *FAST)[0] == 0
    assert sha(tmp_path / "int" / "a.png") == sha(tmp_path / "frac" / "a.png")


def test_preset_then_explicit_flags_override():
    low = parse("--preset", "low").config
    table = FMDPlusConfig.presets  # the default attack is FMD+
    assert parse("--preset", "low").attack == "fmd+"
    assert (low.eps, low.alpha, low.steps) == (table["low"]["eps"], table["low"]["alpha"], FMDPlusConfig().steps)
    mixed = parse("--preset", "low", "--steps", "7", "--eps", "6")
    assert mixed.config.steps == 7 and mixed.config.eps == pytest.approx(6 / 255)
    assert mixed.config.alpha == table["low"]["alpha"] and mixed.preset == "low"
    fmd = parse("--preset", "low", "--attack", "fmd").config
    want = FMDConfig.presets["low"]
    assert (fmd.eps, fmd.alpha, fmd.steps) == (want["eps"], want["alpha"], want["steps"])
    paper = parse("--paper", "--steps", "5")
    assert paper.config.steps == 5 and paper.config.keep_best is False and paper.config.eps == pytest.approx(16 / 255)
    assert paper.attack == "fmd" and paper.config.alpha == pytest.approx(4 / 255)  # --paper is one flag away
    default = parse()
    assert default.preset == "high" and default.config == FMDPlusConfig() and default.config.texture is True


def test_fast_preset_is_fmd_plus_with_fewer_steps_cheaper_views_and_a_small_keep_weight():
    fast, default = parse("--preset", "fast"), FMDPlusConfig()
    assert fast.attack == "fmd+" and fast.config.steps < default.steps and fast.config.views > default.views
    assert fast.config.redraw > default.redraw == 1 and fast.config.lam == pytest.approx(0.01)
    assert fast.config.view_scale < default.view_scale == 1.0 and fast.config.antialias is False < default.antialias
    assert fast.config.eps == pytest.approx(16 / 255) and fast.config.alpha == pytest.approx(5 / 255)
    with pytest.raises(ValueError, match="'fast' is not a preset of attack fmd.*it is one of fmd\\+"):
        ProtectSettings.build(preset="fast", attack="fmd")
    with pytest.raises(ValueError, match="'extreme' is not a preset"):
        ProtectSettings.build(preset="extreme")


def test_help_fits_one_screen_and_help_all_reaches_every_setting(capsys):
    import dataclasses

    from onlymine.attacks import ATTACKS
    from onlymine.attacks.config import flag_of
    from onlymine.settings import SECTIONS

    for flag in ("--help", "--help-all"):
        with pytest.raises(SystemExit):
            cli.main(["protect", flag])
        text = capsys.readouterr().out
        options = [ln for ln in text.splitlines() if ln.startswith("  -")]
        if flag == "--help":
            assert len(options) <= 25 and "--views" not in text
        else:
            every = {flag_of(f) for c in [*(a.Config for a in ATTACKS.values()), *SECTIONS.values()]
                     for f in dataclasses.fields(c)}
            assert all(f in text for f in every) and "--views" in text


def test_config_file_sets_any_setting_and_flags_win(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("preset: mid\nviews: 3\neps: 6/255\nlayer: [features.4]\nformat: webp\nprecision: fp32\n")
    s = parse("--config", str(cfg), "--eps", "5")
    assert s.preset == "mid" and s.config.views == 3 and s.config.eps == pytest.approx(5 / 255)
    assert s.config.layers == ("features.4",) and s.output.fmt == "webp" and s.runtime.precision == "fp32"
    cfg.write_text("viewz: 3\n")
    with pytest.raises(ValueError, match="unknown setting.*viewz"):
        parse("--config", str(cfg))
    cfg.write_text("views: 0\n")
    with pytest.raises(ValueError, match="--views must be at least 1"):
        parse("--config", str(cfg))


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
