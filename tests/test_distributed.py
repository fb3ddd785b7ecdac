"""Protection on a local Ray cluster (2 CPUs): the same outputs and verification as the plain path, one manifest,
and a worker killed mid-run loses nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from tests.tiny import tiny_net  # noqa: E402

from onlymine import cli, io  # noqa: E402
from onlymine.distributed import protect_ray  # noqa: E402
from onlymine.settings import ProtectSettings  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> str:
    """The tiny random-init classifier as an ONNX file with its sidecar: a model spec every Ray worker can load."""
    import torch

    d = tmp_path_factory.mktemp("model")
    torch.onnx.export(tiny_net(), (torch.zeros(1, 3, 32, 32),), str(d / "tiny.onnx"), dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    (d / "tiny.json").write_text(json.dumps({"input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
                                             "class_names": list("abcde")}))
    return f"onnx:{d / 'tiny.onnx'}"


def rows(out: Path) -> dict[str, dict]:
    found = io.read_jsonl(out / "manifest.jsonl")
    by_input = {Path(r["input"]).name: r for r in found}
    assert len(by_input) == len(found), "one manifest row per input"
    return by_input


def test_ray_local_two_workers_verifies_exactly_as_the_plain_path(cluster, tmp_path, capsys):
    common = ["--steps", "2", "--batch-size", "2", "--no-progress"]
    # each of the two actors gets one CPU, so one thread: fp32 sums are only bit-identical at equal thread counts
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["protect", str(SAMPLES), "-o", str(tmp_path / "plain"), *common]) == 0
    finally:
        torch.set_num_threads(threads)
    assert cli.main(["protect", str(SAMPLES), "-o", str(tmp_path / "ray"), "--ray", "local", "--workers", "2",
                     *common]) == 0
    plain, dist = rows(tmp_path / "plain"), rows(tmp_path / "ray")
    assert sorted(plain) == sorted(dist) == sorted(p.name for p in SAMPLES.glob("*.png"))
    for name, p in plain.items():
        d = dist[name]
        assert d["status"] == p["status"] == "ok" and d["settings_key"] == p["settings_key"]
        assert {k: d["verified"][k] for k in ("top1", "kept", "clean_top1")} == \
            {k: p["verified"][k] for k in ("top1", "kept", "clean_top1")}
        # the same batches through the same loop: the same files
        assert io.sha256_file(d["output"]) == io.sha256_file(p["output"])
    assert json.loads((tmp_path / "ray" / "config.json").read_text())["settings_key"] == plain[name]["settings_key"]


def test_a_worker_killed_mid_run_loses_no_file_and_no_row_is_duplicated(cluster, tmp_path, tiny_onnx):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        with Image.open(sorted(SAMPLES.glob("*.png"))[i % 4]) as im:
            im.convert("RGB").resize((96 + 8 * i, 80)).save(src / f"p{i}.png")
    s = ProtectSettings.build(model=tiny_onnx, steps=40, layers=["inner.2/Conv"], precision="fp32")
    killed: list[int] = []

    def kill_one(outcome) -> None:  # after the first file comes back, kill a worker that is still busy
        if killed:
            return
        pids = []  # ray names an actor's process ray::MapWorker(...) (Linux: its /proc cmdline)
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if b"MapWorker" in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
        if pids:
            os.kill(pids[-1], signal.SIGKILL)
            killed.append(pids[-1])

    done = threading.Event()
    result = {}

    def go() -> None:
        result["summary"] = protect_ray([src], tmp_path / "out", s, workers=2, batch_size=1, device="cpu",
                                        on_outcome=kill_one)
        done.set()

    t = threading.Thread(target=go)
    t.start()
    t.join(timeout=600)
    assert done.is_set(), "the run did not complete after a worker was killed"
    assert killed, "no worker was killed"
    summary = result["summary"]
    assert summary.count("ok") + summary.count("failed") == 8 and summary.count("error") == 0
    found = rows(tmp_path / "out")
    assert sorted(found) == [f"p{i}.png" for i in range(8)]
    for r in found.values():
        assert Path(r["output"]).is_file() and r["verified"]["linf"] <= s.config.eps + 1e-6


def test_a_bad_layer_is_one_error_before_any_actor_starts(tmp_path):
    from onlymine.models.taps import LayerError

    was = ray.is_initialized()
    with pytest.raises(LayerError, match="bogus"):
        protect_ray([SAMPLES], tmp_path / "out", ProtectSettings.build(layers=["bogus"], steps=2), workers=2)
    assert ray.is_initialized() == was, "no cluster was started for a run that cannot go"


def test_one_gpu_per_actor_where_the_cluster_has_gpus(monkeypatch):
    """The CUDA placement decided without a GPU: what protect_dataset asks Ray for on a cluster with GPUs."""
    from onlymine import distributed

    seen = {}

    class Dataset:
        def map_batches(self, fn, **kw):
            seen.update(kw)
            return self

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    distributed.protect_dataset(Dataset(), ProtectSettings.build(steps=2), "out", workers=2)
    assert seen["num_gpus"] == 1.0 and seen["num_cpus"] == 1.0 and seen["compute"].max_size == 2
    assert seen["fn_constructor_kwargs"]["device"] == "cuda"
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    distributed.protect_dataset(Dataset(), ProtectSettings.build(steps=2), "out", workers=2, device="cpu")
    assert seen["num_gpus"] == 0.0 and seen["num_cpus"] == 8.0  # each actor an equal share of the CPUs
    assert seen["fn_constructor_kwargs"]["device"] == "cpu"


# ------------------------------------------------------------------ the actor's rules, in this process (no Ray)
def _worker(tiny_onnx: str, out: Path):
    from onlymine.distributed import ProtectWorker

    s = ProtectSettings.build(model=tiny_onnx, steps=2, layers=["inner.2/Conv"], precision="fp32")
    return ProtectWorker(s.to_dict(), str(out), device="cpu")


def _photos(src: Path, n: int) -> list[Path]:
    from PIL import Image

    src.mkdir()
    paths = []
    for i in range(n):
        with Image.open(sorted(SAMPLES.glob("*.png"))[i]) as im:
            im.convert("RGB").resize((64, 48)).save(src / f"p{i}.png")
        paths.append(src / f"p{i}.png")
    return paths


def test_an_actor_refuses_a_file_it_did_not_write_and_a_retry_takes_back_its_own(tmp_path, tiny_onnx):
    out = tmp_path / "out"
    out.mkdir()
    p0, p1 = _photos(tmp_path / "in", 2)
    (out / "p0.png").write_bytes(b"the user's own file")
    w = _worker(tiny_onnx, out)
    batch = {"input": [str(p0), str(p1)], "output": [str(out / "p0.png"), str(out / "p1.png")]}
    first = w(batch)
    assert first["status"] == ["error", "ok"] and "did not write" in first["message"][0]
    assert (out / "p0.png").read_bytes() == b"the user's own file"
    again = w(batch)  # the same batch retried after a lost actor: no manifest row yet, only its claims
    assert again["status"] == ["error", "ok"] and all(not s for s in again["stopped"])


def test_a_full_disk_on_an_actor_says_stop_and_takes_its_claim_back(tmp_path, tiny_onnx, monkeypatch):
    import errno

    from onlymine.protect.manifest import Claims

    out = tmp_path / "out"
    out.mkdir()
    (p0,) = _photos(tmp_path / "in", 1)
    w = _worker(tiny_onnx, out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "p0.png"))

    monkeypatch.setattr("onlymine.protect.loop.io.save_image", full)
    res = w({"input": [str(p0)], "output": [str(out / "p0.png")]})
    assert res["status"] == ["error"] and "no space left" in res["stopped"][0]
    assert not Claims(out).says(out / "p0.png", io.sha256_file(p0)), "a claim outlived a publish that failed"
    assert not (out / "p0.png").exists()


def test_resume_after_the_driver_died_redoes_files_only_the_claims_knew(cluster, tmp_path, tiny_onnx):
    """A cluster restart after the driver died between an actor publishing files and the driver writing their
    rows: --resume recognises the files by their claims, redoes them, and then skips what is done."""
    src = tmp_path / "in"
    _photos(src, 3)
    out = tmp_path / "out"
    s = ProtectSettings.build(model=tiny_onnx, steps=2, layers=["inner.2/Conv"], precision="fp32")
    first = protect_ray([src], out, s, workers=1, batch_size=2, device="cpu")
    assert first.count("ok") == 3
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text(lines[0] + "\n")  # the rows of p1, p2 never reached the manifest
    again = protect_ray([src], out, s, workers=1, batch_size=2, device="cpu", resume=True)
    assert again.count("skipped") == 1 and again.count("ok") == 2 and again.count("error") == 0
    assert sorted(rows(out)) == ["p0.png", "p1.png", "p2.png"]  # and one row each (rows() checks)
    third = protect_ray([src], out, s, workers=1, batch_size=2, device="cpu", resume=True)
    assert third.count("skipped") == 3
