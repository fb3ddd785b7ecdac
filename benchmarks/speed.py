"""Speed of protection, side by side on the same photos in one run, with the protection each one buys.

Methods (each in its own subprocess, so that its peak RSS is its own; rounds interleave the methods over
chunks of the photos, in rotated order, so that a noisy neighbour slows every method alike):

* ``naive``: the paper's loop as a researcher would first write it, self-contained below (no onlymine
  attack code): fp32, batch 1, N fixed (100), eager; torchvision preprocessing (Resize(256) + CenterCrop(224)
  + Normalize) on the tensor inside the loop; the PyTorch adversarial-example tutorial's pattern
  (``loss.backward()`` then ``x.grad``, the model as loaded, parameters requiring grad); clean features once.
* ``torchattacks``: torchattacks.PGD with the same eps, alpha and steps on the plain onlymine Classifier
  (a model taking [0,1] images of any size), in batches of same-size photos; outputs saved as PNG.
* ``onlymine``: :func:`onlymine.protect.protect_paths` with the default settings (save, re-read,
  verification and retries included).
* ``onlymine-paper``: the same with ``--paper`` (last iterate, N = 100, no early stopping).
* variants ``onlymine+KEY=VALUE[+KEY=VALUE...]``: the defaults with settings changed (e.g. ``early_stop=True``,
  ``precision=bf16``, ``compile=True``, ``fold_bn=False``, ``preset=fast``, ``steps=25+alpha=4/255``), to
  decide whether an option may be on by default or a preset keeps the protection.
* ``step``: per-step time at the same batch size: torchattacks.PGD vs onlymine FMD (no early stop), alternated.

Protection of every method is measured on its saved files with :func:`onlymine.evaluate.evaluate_pairs`:
authorized agreement (MobileNetV2's prediction kept), unauthorized accuracy of EfficientNet-Lite0/1/2
(ClassifierJudge), PSNR and L-inf. Results: ``OUT/results.json`` and ``OUT/results.md``.

    python benchmarks/speed.py -o docs/results/speed --photos 16 --rounds 2         # ~10 min, quiet machine
    python benchmarks/speed.py -o /tmp/speed --photos 2 --steps 3 --rounds 1          # smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KIT_PHOTOS = REPO.parent / "shared" / "kit" / "photos" / "imagenet"
SPEC = "torchvision:mobilenet_v2"
JUDGES = ("efficientnet-lite:lite0", "efficientnet-lite:lite1", "efficientnet-lite:lite2")
DEFAULT_METHODS = ("naive", "torchattacks", "onlymine", "onlymine-paper", "onlymine+early_stop=True", "step")


# ------------------------------------------------------------------------------------------ photos
def pick_photos(n: int, kit: Path = KIT_PHOTOS) -> list[tuple[Path, int]]:
    """``n`` labelled kit photos: foolbox and ai-benchmark alternated, odd sizes included (deterministic)."""
    with open(kit / "labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if int(r["label"]) >= 0]
    fool = [r for r in rows if r["file"].startswith("foolbox")]
    aib = [r for r in rows if not r["file"].startswith("foolbox")]
    from PIL import Image

    odd = [r for r in aib if Image.open(kit / r["file"]).size != (512, 512)]
    aib = odd + [r for r in aib if r not in odd]
    mixed = [r for pair in zip(fool, aib, strict=False) for r in pair] + fool[len(aib):] + aib[len(fool):]
    return [(kit / r["file"], int(r["label"])) for r in mixed[:n]]


# ------------------------------------------------------------------------------------------ naive reference
def naive_protect(files: list[Path], out_dir: Path, steps: int, eps: float, alpha: float, lam: float,
                  layer: str, seed: int = 0) -> int:
    """The paper's FMD loop, one image at a time, as first written (see the module docstring)."""
    import copy

    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision.transforms.v2.functional as TF
    from PIL import Image

    from onlymine.models import load_model

    net = copy.deepcopy(load_model(SPEC).net).eval()  # the weights only; as torchvision loads them:
    for p in net.parameters():
        p.requires_grad_(True)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        x = TF.resize(x, [256], antialias=True)
        x = TF.center_crop(x, [224, 224])
        return TF.normalize(x, mean, std)

    feats: dict[str, torch.Tensor] = {}
    net.get_submodule(layer).register_forward_hook(lambda _m, _i, o: feats.__setitem__("f", o))
    torch.manual_seed(seed)
    steps_done = 0
    for path in files:
        img = Image.open(path).convert("RGB")
        x0 = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
        with torch.no_grad():
            y = net(preprocess(x0)).argmax(1)
            f0 = feats["f"].detach()
        x = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(steps):
            x.requires_grad = True
            logits = net(preprocess(x))
            loss = F.mse_loss(feats["f"], f0) - lam * F.cross_entropy(logits, y)
            net.zero_grad()
            loss.backward()
            with torch.no_grad():
                x = x + alpha * x.grad.sign()
                x = torch.min(torch.max(x, x0 - eps), x0 + eps).clamp(0, 1)
            steps_done += 1
        arr = (x.detach()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(out_dir / (path.stem + ".png"))
    return steps_done


# ------------------------------------------------------------------------------------------ workers
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _settings(method: str, steps: int) -> Any:
    from onlymine.settings import ProtectSettings, parse_budget

    if method == "onlymine-paper":
        return ProtectSettings.build(paper=True, model=SPEC, steps=steps)
    overrides: dict[str, Any] = {}
    for kv in method.split("+")[1:]:  # onlymine+steps=25+alpha=4/255+texture=False
        key, _, val = kv.partition("=")
        overrides[key] = {"True": True, "False": False}.get(val, val)
        if key in ("eps", "alpha"):
            overrides[key] = parse_budget(val)
            continue
        for conv in (int, float):
            try:
                overrides[key] = conv(val)
                break
            except ValueError:
                pass
    # onlymine's defaults use their own number of steps, scaled like the reference's N (same at N = 100)
    s = ProtectSettings.build(model=SPEC, **overrides)
    return ProtectSettings.build(model=SPEC, **{**overrides, "steps": max(1, round(s.config.steps * steps / 100))})


def _dirname(method: str) -> str:
    """A folder name for a method (``onlymine+alpha=4/255`` -> ``onlymine_alpha-4_255``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", method.replace("+", "_").replace("=", "-"))


def _warmup(clf: Any) -> None:
    """One forward/backward pass at the model's input size (oneDNN primitive creation, allocator)."""
    import torch

    x = torch.rand(1, 3, 256, 256).requires_grad_(True)
    torch.autograd.grad(clf(x).sum(), x)


def worker(method: str, files: list[Path], out_dir: Path, a: argparse.Namespace) -> dict[str, Any]:
    """Run one method on ``files`` into ``out_dir``; timing excludes model loading and set-up."""
    import torch

    from onlymine.attacks import FMDConfig

    eps, alpha = FMDConfig().eps, FMDConfig().alpha
    out_dir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    res: dict[str, Any] = {"method": method, "images": len(files)}
    if method == "naive":
        from onlymine.attacks.defaults import MEASURED

        d = MEASURED[("fmd", SPEC)]
        t = time.perf_counter()
        res["steps_total"] = naive_protect(files, out_dir, a.steps, eps, alpha, d["lam"], d["layers"][0], a.seed)
        res["seconds"] = time.perf_counter() - t
    elif method == "torchattacks":
        import torchattacks

        from onlymine import io
        from onlymine.models import load_model

        clf = load_model(SPEC)
        _warmup(clf)
        atk = torchattacks.PGD(clf, eps=eps, alpha=alpha, steps=a.steps, random_start=True)
        t = time.perf_counter()
        ims = [(p, io.load_image(p).rgb) for p in files]
        by_size: dict[tuple[int, ...], list[tuple[Path, torch.Tensor]]] = {}
        for p, x in ims:
            by_size.setdefault(tuple(x.shape), []).append((p, x))
        for group in by_size.values():
            for i in range(0, len(group), a.batch_size):
                chunk = group[i : i + a.batch_size]
                x = torch.stack([c[1] for c in chunk])
                y = clf.predict(x)[0]
                adv = atk(x, y)
                for (p, _), im in zip(chunk, adv, strict=True):
                    io.save_image(out_dir / (p.stem + ".png"), im, overwrite=True)
        res["seconds"] = time.perf_counter() - t
        res["steps_total"] = a.steps * len(files)
    elif method.startswith("onlymine"):
        from onlymine.protect import Protector, protect_paths

        t = time.perf_counter()
        prot = Protector(_settings(method, a.steps), device="cpu")
        _warmup(prot.fast_model)
        res["setup_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        summary = protect_paths(files, out_dir, prot.settings, batch_size=a.batch_size, progress=False,
                                protector=prot)
        res["seconds"] = time.perf_counter() - t
        rows = [o.row for o in summary.outcomes if o.row and "record" in o.row]
        res["steps_total"] = sum(int(r["record"].get("steps", prot.settings.config.steps)) for r in rows)
        res["verified_kept"] = sum(bool(r["verified"]["kept"]) for r in rows)
        res["attempts_total"] = sum(int(r["attempts"]) for r in rows)
        res["settings"] = prot.settings.to_dict()
    elif method == "step":
        res.update(step_compare(files, a))
    else:
        raise SystemExit(f"unknown method {method!r}")
    res["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    res["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return res


def step_compare(files: list[Path], a: argparse.Namespace, reps: int = 3) -> dict[str, Any]:
    """ms per image per step at batch ``a.batch_size`` (512x512 photos): torchattacks.PGD vs onlymine FMD and
    FMD+ (four taps, input diversity, momentum)."""
    import torch
    import torchattacks

    from onlymine import io
    from onlymine.attacks import FMD, FMDConfig, FMDPlus
    from onlymine.attacks.defaults import MEASURED
    from onlymine.models import load_model
    from onlymine.models.fast import fast_classifier

    eps, alpha = FMDConfig().eps, FMDConfig().alpha
    d = {"layer": MEASURED[("fmd", SPEC)]["layers"][0], "lam": MEASURED[("fmd", SPEC)]["lam"]}
    ims = [x for x in (io.load_image(p).rgb for p in files) if tuple(x.shape) == (3, 512, 512)]
    if not ims:
        return {"step_note": "no 512x512 photo among the files"}
    batch = torch.stack([ims[i % len(ims)] for i in range(a.batch_size)])
    clf = load_model(SPEC)
    plus_layers = list(MEASURED[("fmd+", SPEC)]["layers"])
    fast = fast_classifier(clf, keep=[d["layer"], *plus_layers])
    unfused = fast_classifier(clf, keep=plus_layers, fuse=False)  # --no-fuse: conv and ReLU6 as two passes
    k = a.step_steps
    runs = {  # (short, long) runs; the difference over k steps is the marginal cost of a step
        "torchattacks_pgd": [torchattacks.PGD(clf, eps=eps, alpha=alpha, steps=n, random_start=True)
                             for n in (1, 1 + k)],
        "onlymine_fmd": [FMD(fast, d["layer"], eps=eps, alpha=alpha, steps=n, lam=d["lam"], keep_best=True)
                         for n in (1, 1 + k)],
        # one forward/backward pass per step, the work of a PGD step: FMD+ with one view per step from its bank
        # (resampled without the antialiasing filter, --no-antialias)
        "onlymine_fmd_plus": [FMDPlus(fast, plus_layers, eps=eps, alpha=alpha / 2, steps=n, views=1, frame=False,
                                      shuffle=0, antialias=False) for n in (1, 1 + k)],
        "onlymine_fmd_plus_unfused": [FMDPlus(unfused, plus_layers, eps=eps, alpha=alpha / 2, steps=n, views=1,
                                              frame=False, shuffle=0, antialias=False) for n in (1, 1 + k)],
        # the default preset's step: the image and its views, (views + 1) passes per step
        "onlymine_fmd_plus_default": [FMDPlus(fast, plus_layers, steps=n) for n in (1, 1 + k)],
    }
    from onlymine.runtime import keep_freed_memory

    keep_freed_memory()  # process-wide, as a Protector sets it: PGD and FMD+ both run with glibc's heap kept
    y = clf.predict(batch)[0]
    _warmup(clf)
    _warmup(fast)
    # the best short run and the best long run of each, separately: the best *difference* of pairs picked the
    # pair whose short run was slowest (a 2-core VM's noise is a good part of one step), hence FMD figures
    # near zero or below it in earlier runs
    runs_s: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runs}
    for _ in range(reps):
        for name, (short, long) in runs.items():
            t = time.perf_counter()
            short(batch, y)
            t1 = time.perf_counter()
            long(batch, y)
            t2 = time.perf_counter()
            runs_s[name][0].append(t1 - t)
            runs_s[name][1].append(t2 - t1)
    times = {n: (min(lo) - min(sh)) / (k * a.batch_size) * 1000 for n, (sh, lo) in runs_s.items()}
    out = {f"{n}_ms_per_img_step": round(v, 2) for n, v in times.items()}
    out["step_default_passes"] = runs["onlymine_fmd_plus_default"][0].cfg.views + 1
    out["step_default_redraw"] = runs["onlymine_fmd_plus_default"][0].cfg.redraw
    out["step_batch"] = a.batch_size
    out["step_steps"] = k
    out["step_speedup_vs_torchattacks"] = round(times["torchattacks_pgd"] / times["onlymine_fmd"], 3)
    out["step_speedup_plus_vs_torchattacks"] = round(
        times["torchattacks_pgd"] / times["onlymine_fmd_plus"], 3)
    out["step_speedup_plus_unfused_vs_torchattacks"] = round(
        times["torchattacks_pgd"] / times["onlymine_fmd_plus_unfused"], 3)
    return out


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(clean_dir: Path, outs: dict[str, Path], labels: dict[str, int]) -> dict[str, dict[str, Any]]:
    from onlymine.evaluate import evaluate_pairs, pair_folders, quality_summary, summarize
    from onlymine.judges import ClassifierJudge

    judges = [ClassifierJudge(SPEC)] + [ClassifierJudge(s) for s in JUDGES]
    cache: dict[tuple[str, str], Any] = {}
    res = {}
    for method, folder in outs.items():
        ev = evaluate_pairs(pair_folders(clean_dir, folder), judges, authorized=SPEC, labels=labels,
                            transforms=("crop",), clean_cache=cache, progress=False)
        rows = {r["judge"]: r for r in summarize(ev)}
        unauth = [rows[j]["accuracy"] for j in JUDGES]
        q = quality_summary(ev)
        res[method] = {"authorized_kept": rows[SPEC]["agreement"],
                       "unauthorized_accuracy": {j: rows[j]["accuracy"] for j in JUDGES},
                       "unauthorized_mean": sum(unauth) / len(unauth),
                       "clean_unauthorized_mean": sum(rows[j]["clean_accuracy"] for j in JUDGES) / len(JUDGES),
                       "psnr": q.get("psnr"), "ssim": q.get("ssim"), "linf_max": q.get("linf_max")}
    return res


# ------------------------------------------------------------------------------------------ driver
def run_worker(method: str, files: list[Path], out_dir: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", method, "--out-dir", str(out_dir), "--steps", str(a.steps),
           "--batch-size", str(a.batch_size), "--seed", str(a.seed), "--step-steps", str(a.step_steps),
           "--files", *map(str, files)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def aggregate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    agg: dict[str, Any] = {"images": sum(p["images"] for p in parts),
                           "seconds": sum(p.get("seconds", 0) for p in parts),
                           "steps_total": sum(p.get("steps_total", 0) for p in parts),
                           "peak_rss_mb": max(p["peak_rss_mb"] for p in parts),
                           "loadavg": [p["loadavg"] for p in parts]}
    for key in ("verified_kept", "attempts_total", "setup_seconds"):
        if key in parts[0]:
            agg[key] = sum(p[key] for p in parts)
    for p in parts:
        for k, v in p.items():
            if k.startswith("step") or k.endswith("ms_per_img_step") or k == "settings":
                agg.setdefault(k, v)
    if agg["seconds"]:
        agg["images_per_s"] = agg["images"] / agg["seconds"]
    if agg["images"]:
        agg["mean_steps"] = agg["steps_total"] / agg["images"]
    return agg


def markdown(res: dict[str, Any]) -> str:
    m = res["methods"]
    base = m.get("naive", {}).get("images_per_s")
    lines = [f"Machine: {res['machine']['cpu']['model']}, {res['machine']['cpu']['cores']} cores, torch "
             f"{res['machine']['torch']}, {res['machine']['date']}; {res['photos']} kit photos "
             f"(../shared/kit/photos/imagenet), N = {res['args']['steps']}, batch {res['args']['batch_size']}; "
             f"kernels: {res['machine'].get('torch_cpu_capability', '?')}"
             + (f", capped by {res['machine']['isa_cap']}" if res["machine"].get("isa_cap") else "") + ".",
             f"Command: `{res['command']}`", "",
             "| method | images/s | x naive | mean steps | peak RSS MB | authorized kept | unauthorized acc "
             "(Lite0/1/2 mean) | clean unauth acc | PSNR dB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in m.items():
        if name == "step":
            continue
        p = res["protection"].get(name, {})
        ips = r.get("images_per_s")
        ratio = f"{ips / base:.2f}" if ips and base else "-"
        kept = p.get("authorized_kept")
        lines.append(f"| {name} | {ips:.4f} | {ratio} | {r.get('mean_steps', 0):.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{'-' if kept is None else f'{kept:.3f}'} | {p.get('unauthorized_mean', float('nan')):.3f} | "
                     f"{p.get('clean_unauthorized_mean', float('nan')):.3f} | {p.get('psnr') or float('nan'):.2f} |")
    s = m.get("step")
    if s and "onlymine_fmd_ms_per_img_step" in s:
        lines += ["", f"Per step at batch {s['step_batch']} (512x512 photos, marginal cost of {s['step_steps']} "
                  "steps, best short and best long run of 3): "
                  f"torchattacks PGD {s['torchattacks_pgd_ms_per_img_step']} ms/image/step, onlymine FMD "
                  f"{s['onlymine_fmd_ms_per_img_step']} ms/image/step ({s['step_speedup_vs_torchattacks']}x)"
                  + (f", onlymine FMD+ {s['onlymine_fmd_plus_ms_per_img_step']} ms/image/step "
                     f"({s['step_speedup_plus_vs_torchattacks']}x, one view per step: one pass, as PGD)"
                     if "onlymine_fmd_plus_ms_per_img_step" in s else "")
                  + (f" ({s['onlymine_fmd_plus_unfused_ms_per_img_step']} ms, "
                     f"{s['step_speedup_plus_unfused_vs_torchattacks']}x, with --no-fuse)"
                     if "onlymine_fmd_plus_unfused_ms_per_img_step" in s else "")
                  + (f"; the default FMD+ step ({s['step_default_passes']} passes, views held "
                     f"{s['step_default_redraw']} steps) {s['onlymine_fmd_plus_default_ms_per_img_step']} ms/image/step"
                     if "onlymine_fmd_plus_default_ms_per_img_step" in s else "")
                  + "."]
    loads = {k: v["loadavg"] for k, v in m.items()}
    lines += ["", f"1-minute load average at the start/end of each worker: {json.dumps(loads)}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", type=Path, default=Path("docs/results/speed"))
    p.add_argument("--photos", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2, help="chunks of photos; methods interleave per chunk")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--step-steps", type=int, default=5, help="steps per timing in the per-step comparison")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma list of naive, torchattacks, onlymine, onlymine-paper, "
                        "onlymine+KEY=VAL[+KEY=VAL...], step")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--files", nargs="*", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.files, a.out_dir, a)))
        return 0
    if not (KIT_PHOTOS / "labels.csv").is_file():
        print(f"speed benchmark: kit photos not found at {KIT_PHOTOS}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).parent))
    import machine

    methods = [m for m in a.methods.split(",") if m]
    photos = pick_photos(a.photos)
    clean = a.out / "clean"
    for old in (clean, a.out / "out"):  # only what this benchmark wrote before
        if old.exists():
            shutil.rmtree(old)
    clean.mkdir(parents=True)
    for path, _ in photos:
        shutil.copy2(path, clean / path.name)
    files = [clean / path.name for path, _ in photos]
    labels = {path.name: lab for path, lab in photos}
    info = machine.describe()
    rounds = max(1, min(a.rounds, len(files)))
    chunks = [files[i::rounds] for i in range(rounds)]
    parts: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for r, chunk in enumerate(chunks):
        order = methods[r % len(methods):] + methods[: r % len(methods)]
        for m in order:
            if m == "step" and r > 0:
                continue
            print(f"round {r + 1}/{rounds}: {m} on {len(chunk)} photo(s)", file=sys.stderr, flush=True)
            parts[m].append(run_worker(m, chunk, a.out / "out" / _dirname(m), a))
    keys = ("photos", "rounds", "steps", "batch_size", "seed", "step_steps")
    command = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res: dict[str, Any] = {"machine": info, "args": {k: v for k, v in vars(a).items() if k in keys},
                           "command": command, "photos": len(files),
                           "methods": {m: aggregate(v) for m, v in parts.items()}}
    outs = {m: a.out / "out" / _dirname(m) for m in methods if m != "step"}
    print("evaluating saved files", file=sys.stderr, flush=True)
    res["protection"] = evaluate(clean, outs, labels)
    base = res["methods"].get("naive", {}).get("images_per_s")
    for r in res["methods"].values():
        if base and r.get("images_per_s"):
            r["x_naive"] = r["images_per_s"] / base
    (a.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    (a.out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
