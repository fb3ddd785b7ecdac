"""Does the authorized model keep its prediction on every saved file, read as its owner's code would read it?

An outsider's check of an ``onlymine protect`` output folder: every original and its protected file are opened
with PIL (``Image.open(path).convert("RGB")``, EXIF orientation applied to the original as onlymine applies it),
transformed with torchvision transforms written out here (torchvision's own ``weights.transforms()`` object for
MobileNetV2; EfficientNet-Lite's torchvision recipe), and classified by the network. No onlymine
preprocessing, decoding or verification code is used; onlymine only supplies the network weights.
``--pipelines crop,full`` also reads each file as a whole frame stretched to the input size (the published
resampling and normalisation, no crop), for outputs protected with ``--keep-pipelines crop,full``; a file counts as
kept when every named pipeline keeps its clean top-1.

    python benchmarks/check_published.py runs/keep/mobilenet_v2-default [more output folders] --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

LITE = {"efficientnet-lite:lite0": 224, "efficientnet-lite:lite1": 240, "efficientnet-lite:lite2": 260}


PIPELINES = ("crop", "full")


def published(spec: str, pipeline: str = "crop") -> T.Compose:
    if spec == "torchvision:mobilenet_v2":
        from torchvision.models import MobileNet_V2_Weights

        crop = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
        if pipeline == "crop":
            return crop
        size, mean, std, mode = crop.crop_size[0], crop.mean, crop.std, crop.interpolation
    else:
        size, mean, std, mode = LITE[spec], [127 / 255] * 3, [128 / 255] * 3, T.InterpolationMode.BICUBIC
        if pipeline == "crop":
            return T.Compose([T.Resize(size + 32, interpolation=mode), T.CenterCrop(size), T.ToTensor(),
                              T.Normalize(mean, std)])
    # the whole frame, stretched: what an owner's service that never crops does
    return T.Compose([T.Resize((size, size), interpolation=mode, antialias=True), T.ToTensor(),
                      T.Normalize(mean, std)])


def read(path: str, original: bool) -> Image.Image:
    with Image.open(path) as im:
        return (ImageOps.exif_transpose(im) if original else im).convert("RGB")


@torch.no_grad()
def check(folder: Path, pipelines: tuple[str, ...] = ("crop",)) -> dict:
    from onlymine.models import load_model

    config = json.loads((folder / "config.json").read_text())
    spec = config["settings"]["model"]
    net = load_model(spec).net.eval()
    transforms = {name: published(spec, name) for name in pipelines}
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    latest = {r["input"]: r for r in rows if r.get("output")}
    kept, lost = 0, []
    per = {name: {"kept": 0, "not_kept": []} for name in pipelines}
    for r in latest.values():
        original, protected = read(r["input"], True), read(r["output"], False)
        failed = []
        for name, transform in transforms.items():
            clean, prot = net(torch.stack([transform(original), transform(protected)])).argmax(-1).tolist()
            if clean == prot:
                per[name]["kept"] += 1
            else:
                failed.append(name)
                per[name]["not_kept"].append({"input": r["input"], "clean": clean, "protected": prot,
                                              "status": r["status"]})
        if failed:
            lost.append({"input": r["input"], "status": r["status"], "pipelines": failed})
        else:
            kept += 1
    n = max(1, len(latest))
    for entry in per.values():
        entry["kept_pct"] = round(100 * entry["kept"] / n, 2)
    return {"folder": str(folder), "model": spec, "preset": config["settings"].get("preset"),
            "settings_key": config.get("settings_key"), "files": len(latest), "kept": kept,
            "kept_pct": round(100 * kept / n, 2), "not_kept": lost, "pipelines": per,
            "keep_pipelines": config["settings"].get("config", {}).get("keep_pipelines"),
            "onlymine_failed": sum(r["status"] != "ok" for r in latest.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--pipelines", default="crop", help="comma list of " + ", ".join(PIPELINES))
    a = ap.parse_args()
    pipelines = tuple(p.strip() for p in a.pipelines.split(",") if p.strip())
    bad = [p for p in pipelines if p not in PIPELINES]
    if bad or not pipelines:
        ap.error(f"--pipelines: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(PIPELINES)}")
    out = []
    for folder in a.folders:
        res = check(folder, pipelines)
        out.append(res)
        name = f"{folder.parent.name}/{folder.name}"  # matrix cells share their last part (one per seed)
        each = " ".join(f"{p} {v['kept']}" for p, v in res["pipelines"].items())
        print(f"{res['model']:26s} {name:48s} kept {res['kept']}/{res['files']} ({res['kept_pct']}%) [{each}] "
              f"onlymine-failed {res['onlymine_failed']}", flush=True)
        for miss in res["not_kept"]:
            print(f"    not kept: {miss}", file=sys.stderr)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
