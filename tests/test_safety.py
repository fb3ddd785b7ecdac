"""The output rule and the boundary checks: one regression test per defect a hostile run found.

onlymine writes only files it creates in its output folder, or files its own manifest says it wrote from an input
with the same content; it never writes over an input; a meaningless setting is one line and exit status 2 before
any model loads; every OS error on output is one line naming the path; a full disk stops the run cleanly.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onlymine import cli, io
from test_protect import sha, write_photo
from tiny import FAST, run_cli, tiny_everywhere


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    tiny_everywhere(monkeypatch)


run = run_cli


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------------ nothing it did not write
def test_resume_never_overwrites_the_original(tmp_path, capsys, monkeypatch):
    d = tmp_path / "d"
    write_photo(d / "a.png", size=(64, 56))
    before = sha(d / "a.png")
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "protect", "d/a.png", "-o", "d", "--resume", *FAST)
    assert rc == 2 and "would be written over the input d/a.png" in one_line(err)
    assert sha(d / "a.png") == before and sorted(p.name for p in d.iterdir()) == ["a.png"]


def test_resume_never_overwrites_an_unrelated_file_in_the_output_folder(tmp_path, capsys):
    write_photo(tmp_path / "in" / "a.png", seed=1)
    mine = write_photo(tmp_path / "OUT" / "a.png", seed=2)  # the user's own file, not written by onlymine
    before = sha(mine)
    rc, out, err = run(capsys, "protect", str(tmp_path / "in"), "-o", str(tmp_path / "OUT"), "--resume", *FAST)
    assert rc == 1 and sha(mine) == before
    assert "onlymine did not write it" in one_line(err) and "1 not written" in out and "0 unreadable" in out


def test_resume_may_replace_what_onlymine_wrote_from_the_same_input(tmp_path, capsys):
    write_photo(tmp_path / "in" / "a.png", seed=1)
    args = ["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *FAST]
    assert run(capsys, *args)[0] == 0
    first = sha(tmp_path / "out" / "a.png")
    rc, out, _ = run(capsys, *args, "--seed", "3", "--resume")  # other settings: redone over its own output
    assert rc == 0 and "1 protected" in out and sha(tmp_path / "out" / "a.png") != first


def test_output_folder_that_is_the_input_folder_is_refused(tmp_path, capsys):
    write_photo(tmp_path / "in" / "a.jpg", seed=1, quality=95)
    rc, _, err = run(capsys, "protect", str(tmp_path / "in"), "-o", str(tmp_path / "in"), *FAST)
    assert rc == 2 and "is or holds the input folder" in one_line(err)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.jpg"]  # no config.json either


def test_output_beside_inputs_that_cannot_collide_says_so_in_one_line(tmp_path, capsys):
    src = write_photo(tmp_path / "d" / "a.jpg", seed=1, quality=95)
    rc, _, err = run(capsys, "protect", str(src), "-o", str(tmp_path / "d"), *FAST)
    assert rc == 0 and "no output can land on an input" in one_line(err)
    assert (tmp_path / "d" / "a.png").is_file() and src.is_file()


def test_resume_key_is_the_resolved_path_not_the_path_as_typed(tmp_path, capsys, monkeypatch):
    write_photo(tmp_path / "in" / "a.png", seed=1)
    assert run(capsys, "protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *FAST)[0] == 0
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(capsys, "protect", "in", "-o", "out", "--resume", *FAST)
    assert rc == 0 and "1 skipped" in out
    assert len(io.read_jsonl(tmp_path / "out" / "manifest.jsonl")) == 1  # no duplicate row


# ------------------------------------------------------------------------------------------ settings at the boundary
@pytest.mark.parametrize(("flags", "message"), [
    (["--eps", "0"], "--eps must be greater than 0"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--steps", "-5"], "--steps must be at least 1"),
    (["--alpha", "0"], "--alpha must be greater than 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--eps", "300"], "--eps must be at most 1"),
    (["--views", "0"], "--views must be at least 1"),
    (["--attack", "fmd", "--views", "3"], "--views does not apply to attack fmd"),
])
def test_meaningless_settings_are_one_line_and_exit_2_before_any_model_loads(tmp_path, capsys, monkeypatch,
                                                                            flags, message):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr("onlymine.protect.loop.load_model", no_model)
    src = write_photo(tmp_path / "a.png")
    rc, _, err = run(capsys, "protect", str(src), "-o", str(tmp_path / "out"), *FAST, *flags)
    assert rc == 2 and message in one_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    src = write_photo(tmp_path / "a.png")
    rc, _, err = run(capsys, "protect", str(src), "-o", str(tmp_path / "out"), "--device", "cuda", *FAST)
    assert rc == 2 and "no such CUDA device" in one_line(err)


def test_output_naming_an_existing_file_is_one_line(tmp_path, capsys):
    src = write_photo(tmp_path / "a.png")
    (tmp_path / "f").write_text("x")
    rc, _, err = run(capsys, "protect", str(src), "-o", str(tmp_path / "f"), *FAST)
    assert rc == 2 and "is a file, not a folder" in one_line(err)


# ------------------------------------------------------------------------------------------ OS errors on output
def test_unwritable_output_is_one_line_per_file_naming_the_path(tmp_path, capsys, monkeypatch):
    for i in range(2):
        write_photo(tmp_path / "in" / f"p{i}.png", seed=i)

    def refuse(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("onlymine.io.save_image", refuse)
    rc, out, err = run(capsys, "protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *FAST)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 2 and "Traceback" not in err
    assert all("cannot write" in ln and "Permission denied" in ln and "out" in ln for ln in lines)
    assert "2 not written" in out


def test_a_full_disk_stops_the_run_cleanly_and_resume_continues(tmp_path, capsys, monkeypatch):
    for i in range(3):
        write_photo(tmp_path / "in" / f"p{i}.png", seed=i)
    real = io.save_image
    calls = []

    def fill_up(path, *a, **k):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr("onlymine.io.save_image", fill_up)
    args = ["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--batch-size", "1", *FAST]
    rc, out, err = run(capsys, *args)
    assert rc == 1 and "Traceback" not in err and "no space left on device" in err
    assert "1 protected before it" in err and "--resume" in err and len(calls) == 2  # stopped at the full disk
    first = tmp_path / "out" / "p0.png"
    kept = sha(first)
    monkeypatch.setattr("onlymine.io.save_image", real)
    rc, out, _ = run(capsys, *args, "--resume")
    assert rc == 0 and "2 protected" in out and "1 skipped" in out and sha(first) == kept


# ------------------------------------------------------------------------------------------ failed files
def test_a_failed_file_is_kept_only_under_a_failed_name_and_resume_retries_it(tmp_path, capsys, monkeypatch):
    src = write_photo(tmp_path / "in" / "a.png", seed=1)
    from onlymine.models import Classifier

    real = Classifier.predict_published
    calls = []

    def flip(self, images):  # the clean label is the model's own; every saved file reads as another class
        cls, conf = real(self, images)
        calls.append(1)
        return (cls + (len(calls) > 1)) % 5, conf

    monkeypatch.setattr(Classifier, "predict_published", flip)
    args = ["protect", str(src.parent), "-o", str(tmp_path / "out"), *FAST, "--retries", "0"]
    rc, out, err = run(capsys, *args)
    failed = tmp_path / "out" / "a.failed.png"
    assert rc == 1 and "not kept" in one_line(err) and not (tmp_path / "out" / "a.png").exists() and failed.is_file()
    row = io.read_jsonl(tmp_path / "out" / "manifest.jsonl")[-1]
    assert row["status"] == "failed" and row["output"] == str(failed)
    monkeypatch.setattr(Classifier, "predict_published", real)
    rc, out, _ = run(capsys, *args, "--resume")
    assert rc == 0 and "1 protected" in out and (tmp_path / "out" / "a.png").is_file() and not failed.exists()


# ------------------------------------------------------------------------------------------ inputs
def test_a_symlink_loop_is_one_line_and_the_run_goes_on(tmp_path, capsys):
    s = tmp_path / "s"
    write_photo(s / "good.png", seed=1)
    (s / "self.jpg").symlink_to("self.jpg")
    (s / "here").symlink_to(".", target_is_directory=True)
    rc, out, err = run(capsys, "protect", str(s), "-o", str(tmp_path / "out"), *FAST)
    assert rc == 1 and "self.jpg: broken or looping symbolic link" in one_line(err)
    assert (tmp_path / "out" / "good.png").is_file() and "1 protected" in out


def test_gif_in_a_folder_gets_a_line(tmp_path, capsys):
    write_photo(tmp_path / "in" / "a.png", seed=1)
    Image.new("RGB", (10, 10)).save(tmp_path / "in" / "anim.gif")
    rc, _, err = run(capsys, "protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *FAST)
    assert rc == 1 and "anim.gif: unsupported image type '.gif'" in one_line(err)


def test_a_newline_in_a_file_name_keeps_the_output_one_line_per_file(tmp_path, capsys):
    src = write_photo(tmp_path / "in" / "bad\nname.png", seed=1)
    (tmp_path / "in" / "broken\n.png").write_bytes(b"not an image")
    rc, out, err = run(capsys, "protect", str(src.parent), "-o", str(tmp_path / "out"), *FAST)
    assert "broken\\n.png" in one_line(err)
    assert any("bad\\nname.png" in ln for ln in out.splitlines() if ln.startswith("ok"))


def test_sixteen_bit_input_stays_within_eps_of_its_original(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 65536, (40, 48), dtype=np.uint16)).save(tmp_path / "deep.png")
    im = io.load_image(tmp_path / "deep.png")
    assert im.bit_depth == 16
    rc, _, _ = run(capsys, "protect", str(tmp_path / "deep.png"), "-o", str(tmp_path / "out"), *FAST)
    out = io.load_image(tmp_path / "out" / "deep.png").rgb
    assert rc == 0 and float((out - im.rgb).abs().max()) <= 16 / 255 + 1e-6


def test_a_budget_off_the_8_bit_grid_is_not_overshot_by_the_rounding(tmp_path, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(src)
    eps = 0.0343  # 8.75 levels: rounding the attack's float output alone could write 9
    rc, out, err = run(capsys, "protect", str(src), "-o", str(tmp_path / "out"), "--eps", str(eps), *FAST)
    saved = io.load_image(tmp_path / "out" / "a.png").rgb
    diff = float((saved - io.load_image(src).rgb).abs().max())
    assert rc == 0 and "exceeds eps" not in err and diff <= 8 / 255 + 1e-6 and diff >= 7 / 255


def test_rgb_under_fully_transparent_pixels_stays_as_it_was(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 0  # the top half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rc, _, _ = run(capsys, "protect", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), *FAST)
    with Image.open(tmp_path / "out" / "a.png") as saved:
        out = np.asarray(saved.convert("RGBA"))
    assert rc == 0 and np.array_equal(out[:20], rgba[:20]) and not np.array_equal(out[20:, :, :3], rgba[20:, :, :3])
    assert np.array_equal(out[..., 3], rgba[..., 3])


def test_budget_flag_errors_do_not_name_internal_functions(capsys):
    with pytest.raises(SystemExit):
        cli.main(["protect", "x", "-o", "y", "--eps", "abc"])
    err = capsys.readouterr().err
    assert "--eps: cannot read 'abc' as a budget" in err and "parse_budget" not in err


def test_output_folder_is_not_created_when_the_checks_fail(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, _ = run(capsys, "protect", "missing.png", "-o", "out", *FAST, "--steps", "0")
    assert rc == 2 and not Path("out").exists()


def test_an_input_named_like_another_inputs_failed_file_gets_its_own_output(tmp_path):
    from onlymine.protect.loop import failed_name
    from onlymine.protect.paths import output_paths

    src = tmp_path / "in"
    files = [src / "a.jpg", src / "a.failed.jpg", src / "b.jpg"]
    out = output_paths(files, {f: src for f in files}, tmp_path / "out", "png")
    assert out[files[0]].name == "a.png" and out[files[2]].name == "b.png"
    assert out[files[1]] != failed_name(out[files[0]]) and out[files[1]].name.startswith("a.failed.jpg.")
    assert len(set(out.values())) == 3
