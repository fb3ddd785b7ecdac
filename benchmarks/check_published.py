"""Does the authorized model keep its prediction on every saved file, read as its owner's code would read it?

An outsider's check of an ``onlymine protect`` output folder: every original and its protected file are opened
with PIL (``Image.open(path).convert("RGB")``, EXIF orientation applied to the original as onlymine applies it),
transformed with torchvision transforms written out here (torchvision's own ``weights.transforms()`` object for
MobileNetV2; EfficientNet-Lite's torchvision recipe), and classified by the network. No onlymine
preprocessing, decoding or verification code is used; onlymine only supplies the network weights.

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


def published(spec: str) -> T.Compose:
    if spec == "torchvision:mobilenet_v2":
        from torchvision.models import MobileNet_V2_Weights

        return MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    size = LITE[spec]
    return T.Compose([T.Resize(size + 32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize([127 / 255] * 3, [128 / 255] * 3)])


def read(path: str, original: bool) -> Image.Image:
    with Image.open(path) as im:
        return (ImageOps.exif_transpose(im) if original else im).convert("RGB")


@torch.no_grad()
def check(folder: Path) -> dict:
    from onlymine.models import load_model

    config = json.loads((folder / "config.json").read_text())
    spec = config["settings"]["model"]
    net = load_model(spec).net.eval()
    transform = published(spec)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    latest = {r["input"]: r for r in rows if r.get("output")}
    kept, lost = 0, []
    for r in latest.values():
        batch = torch.stack([transform(read(r["input"], True)), transform(read(r["output"], False))])
        clean, prot = net(batch).argmax(-1).tolist()
        if clean == prot:
            kept += 1
        else:
            lost.append({"input": r["input"], "clean": clean, "protected": prot, "status": r["status"]})
    return {"folder": str(folder), "model": spec, "preset": config["settings"].get("preset"),
            "settings_key": config.get("settings_key"), "files": len(latest), "kept": kept,
            "kept_pct": round(100 * kept / max(1, len(latest)), 2), "not_kept": lost,
            "onlymine_failed": sum(r["status"] != "ok" for r in latest.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    out = []
    for folder in a.folders:
        res = check(folder)
        out.append(res)
        name = f"{folder.parent.name}/{folder.name}"  # matrix cells share their last part (one per seed)
        print(f"{res['model']:26s} {name:48s} kept {res['kept']}/{res['files']} ({res['kept_pct']}%) "
              f"onlymine-failed {res['onlymine_failed']}", flush=True)
        for miss in res["not_kept"]:
            print(f"    not kept: {miss}", file=sys.stderr)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
