"""The outsider's check (benchmarks/check_published.py) reads files the way onlymine says the owner's pipelines do:
its own torchvision transforms give the tensors onlymine's threat suite gives, for the crop and the whole frame."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import SAMPLES
from onlymine import threats

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("check_published", REPO / "benchmarks" / "check_published.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("spec", ["torchvision:mobilenet_v2", "efficientnet-lite:lite1"])
def test_outsider_transforms_match_the_threat_suite(spec: str) -> None:
    from onlymine.models import load_model, spec_available

    ok, detail = spec_available(spec)
    if not ok:
        pytest.skip(f"{spec} weights unavailable: {detail}")
    model, script = load_model(spec), _script()
    with Image.open(SAMPLES / "chelsea.png") as im:
        photo = im.convert("RGB").crop((0, 0, 451, 300))  # not square, so crop and full differ
    reads = threats.reads_of(model)
    for pipeline in ("crop", "full"):
        ours, theirs = reads[pipeline](photo), script.published(spec, pipeline)(photo)
        assert ours.shape == theirs.shape == (3, *model.cfg.input_size)
        assert torch.allclose(ours, theirs, atol=1e-5), pipeline
    assert not torch.allclose(reads["crop"](photo), reads["full"](photo), atol=1e-2)


def test_pipelines_flag_checks_every_named_pipeline(mobilenet, tmp_path: Path) -> None:
    """A folder whose 'protected' file is the original itself keeps every pipeline; an unknown name is one line."""
    folder = tmp_path / "cell"
    folder.mkdir()
    src = SAMPLES / "coffee.png"
    (folder / "config.json").write_text(json.dumps({"settings": {"model": "torchvision:mobilenet_v2"}}))
    (folder / "manifest.jsonl").write_text(json.dumps({"input": str(src), "output": str(src), "status": "ok"}) + "\n")
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "check_published.py"), str(folder), "--json", str(out)]
    done = subprocess.run([*cmd, "--pipelines", "crop,full"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    res = json.loads(out.read_text())[0]
    assert res["kept"] == res["files"] == 1
    assert {k: v["kept"] for k, v in res["pipelines"].items()} == {"crop": 1, "full": 1}
    bad = subprocess.run([*cmd, "--pipelines", "crop,stretch"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "--pipelines: unknown stretch" in bad.stderr
    assert "Traceback" not in bad.stderr
