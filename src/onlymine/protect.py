"""The one path every image takes: file -> decode -> attack -> atomic save -> verify the saved file -> manifest.

The CLI, the web service, experiments and benchmarks all call :func:`protect_paths` (or :class:`Protector`
for in-memory use); none has its own attack loop, image loading or verification.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from onlymine import io
from onlymine.attacks import ATTACKS, FMD, Attack
from onlymine.models import Classifier, load_model
from onlymine.models.fast import fast_classifier
from onlymine.settings import PLUS_DEFAULTS, PLUS_LAM, ProtectSettings, keep_margin

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
CONFIG = "config.json"


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fallback_layers(model: Classifier, attack: str) -> list[str]:
    """Feature layers when none is given or measured: FMD+ distorts four stages spread over the depth, the
    other attacks one mid stage."""
    return model.spread_layers() if attack == "fmd+" else [model.default_layer()]


Surrogates = Sequence[tuple[Classifier, Sequence[str]]]


def surrogate_layers(model: Classifier, spec: str) -> list[str]:
    """The taps FMD+ distorts on a surrogate: its measured FMD+ layers, else four stages spread over the depth."""
    return list(PLUS_DEFAULTS.get(spec, {}).get("layer", [])) or fallback_layers(model, "fmd+")


def load_surrogates(specs: Sequence[str], authorized: str, device: torch.device | str,
                    wrap: Callable[[Classifier], Classifier] | None = None) -> list[tuple[Classifier, list[str]]]:
    """Load the surrogate models of ``specs`` with their taps (``wrap`` adapts each, e.g. to a face model)."""
    if authorized in specs:
        raise ValueError(f"the authorized model {authorized} cannot also be a surrogate")
    out = []
    for spec in specs:
        clf = load_model(spec, device=device)
        clf = wrap(clf) if wrap is not None else clf
        out.append((clf, surrogate_layers(clf, spec)))
    return out


def build_attack(model: Classifier, s: ProtectSettings, surrogates: Surrogates = (), **changes: Any) -> Attack:
    """The attack that ``settings`` describe (``changes`` override single values, e.g. for a retry);
    ``surrogates``: the loaded models of ``s.surrogates`` with their taps (FMD+ only)."""
    s = replace(s, **changes) if changes else s
    layers = s.layer or fallback_layers(model, s.attack)
    if s.surrogates and s.attack != "fmd+":
        raise ValueError(f"surrogate models work with attack fmd+ only, not {s.attack!r}")
    if len(surrogates) != len(s.surrogates):
        raise ValueError(f"settings name {len(s.surrogates)} surrogate(s) but {len(surrogates)} were loaded")
    margin = keep_margin(s, model.device)
    if s.attack == "fmd+":
        return ATTACKS[s.attack](model, layers, eps=s.eps, alpha=s.alpha, steps=s.steps, min_margin=margin,
                                 lam=PLUS_LAM if s.lam is None else float(s.lam), kappa=s.kappa,
                                 momentum=s.momentum, diversity=s.diversity, ti_kernel=s.ti_kernel,
                                 jpeg_prob=s.jpeg_prob, texture=s.texture, schedule=s.schedule,
                                 random_start=s.random_start, seed=s.seed, surrogates=surrogates,
                                 linbp=s.linbp, importance=s.importance,
                                 views=s.views, shuffle=s.shuffle, robust_keep=s.robust_keep)
    if s.attack == "fmd":
        return FMD(model, layers, eps=s.eps, alpha=s.alpha, steps=s.steps, lam=float(s.lam or 0.0),
                   random_start=s.random_start, keep_best=s.keep_best, seed=s.seed, early_stop=s.early_stop,
                   min_margin=margin)
    if s.attack == "feature-only":
        return ATTACKS[s.attack](model, layers, eps=s.eps, alpha=s.alpha, steps=s.steps,
                                 random_start=s.random_start, seed=s.seed)
    if s.attack == "pgd":
        return ATTACKS[s.attack](model, eps=s.eps, alpha=s.alpha, steps=s.steps, random_start=s.random_start,
                                 seed=s.seed, record_layers=layers)
    if s.attack == "uniform-noise":
        return ATTACKS[s.attack](model, eps=s.eps, seed=s.seed, record_layers=layers)
    raise ValueError(f"unknown attack {s.attack!r}; known: {sorted(ATTACKS)}")


def retry_changes(s: ProtectSettings, attempt: int) -> dict[str, Any] | None:
    """Settings for re-optimising images whose saved file flipped the authorized prediction: a 10x stronger
    keep term per attempt and a new random start (FMD and FMD+; ``None`` for attacks without a keep term)."""
    if s.attack not in ("fmd", "fmd+"):
        return None
    lam = float(s.lam if s.lam is not None else (PLUS_LAM if s.attack == "fmd+" else 0.0))
    return {"lam": lam * 10 ** (attempt + 1) or 1.0, "keep_best": True, "seed": s.seed + attempt + 1}


@dataclass
class Outcome:
    """One image's fate; ``row`` is its manifest line."""

    path: Path
    status: str  # ok | failed | error | skipped
    message: str = ""
    row: dict[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and self.count("error") == 0


class Protector:
    """Protects decoded images with one authorized model and verifies the saved files.

    Args:
        settings: a :class:`ProtectSettings` (resolved against the model's defaults here).
        device: ``auto`` | ``cpu`` | ``cuda`` | ...
        model: an already loaded :class:`Classifier` (else ``settings.model`` is loaded).
    """

    def __init__(self, settings: ProtectSettings, device: str = "auto", model: Classifier | None = None) -> None:
        self.device = pick_device(device)
        self.model = model if model is not None else load_model(settings.model, device=self.device)
        s = settings.resolved()
        self.settings = replace(s, layer=s.layer or fallback_layers(self.model, s.attack))
        # the attack runs on a faster copy of the model (same function); verification uses the model itself
        self.fast_model = fast_classifier(self.model, keep=self.settings.layer, fold_bn=s.fold_bn,
                                          channels_last=s.channels_last, precision=s.precision, compile=s.compile)
        self.surrogates = self._load_surrogates()
        self.attack = build_attack(self.fast_model, self.settings, self.surrogates)

    def _load_surrogates(self) -> list[tuple[Classifier, list[str]]]:
        """``settings.surrogates`` loaded, each as a faster copy like the authorized model's."""
        s = self.settings
        return [(fast_classifier(m, keep=names, fold_bn=s.fold_bn, channels_last=s.channels_last,
                                 precision=s.precision), names)
                for m, names in load_surrogates(s.surrogates, s.model, self.device)]

    def protect_batch(self, images: Sequence[io.LoadedImage], outputs: Sequence[Path],
                      overwrite: bool = False) -> list[Outcome]:
        """Attack, save atomically, re-read and verify; re-optimise images whose saved file flips.

        The label the attack defends and every verdict on a saved file come from the model's published
        pipeline on the PIL image (:meth:`Classifier.predict_published`), as the owner's own code reads it."""
        s = self.settings
        x0 = [im.rgb if im.bit_depth == 8 else io.quantize(im.rgb) for im in images]
        t0 = time.perf_counter()
        clean, clean_conf = self.model.predict_published([io.to_pil(x) for x in x0])
        clean = clean.cpu()
        result = self.attack.run(x0, labels=clean)
        adv, records = list(result.images), list(result.records)
        attempts = [1] * len(images)
        pending = list(range(len(images)))
        verified: dict[int, dict[str, Any]] = {}
        for attempt in range(s.retries + 1):
            def save_and_reread(i: int, attempt: int = attempt) -> tuple[torch.Tensor, Any]:
                io.save_image(outputs[i], adv[i], images[i].alpha, fmt=s.fmt, quality=s.quality,
                              icc_profile=images[i].icc_profile, overwrite=overwrite or attempt > 0)
                return io.load_image(outputs[i]).rgb, io.open_rgb(outputs[i])

            files = _map_io(save_and_reread, pending)  # encoders/decoders release the GIL: in parallel
            reread = [f[0] for f in files]
            top1, conf = self.model.predict_published([f[1] for f in files])
            diff_top1 = self.model.predict(reread)[0]  # the attack's own pipeline, fp32: a diagnostic only
            for k, i in enumerate(pending):
                verified[i] = {
                    "top1": int(top1[k]),
                    "conf": round(float(conf[k]), 6),
                    "kept": int(top1[k]) == int(clean[i]),
                    "clean_top1": int(clean[i]),
                    "clean_conf": round(float(clean_conf[i]), 6),
                    "pipeline": "published",
                    "differentiable_top1": int(diff_top1[k]),
                    "linf": float((reread[k] - x0[i]).abs().max()),
                    "linf_vs_original": float((reread[k] - images[i].rgb).abs().max()),
                    "psnr": _psnr(reread[k], images[i].rgb),
                }
            pending = [i for i in pending if not verified[i]["kept"]]
            if not pending or attempt == s.retries:
                break
            # Re-optimise the flipped images with a 10x stronger keep term and a new random start.
            log.info("re-optimising %d image(s) whose saved file flipped the authorized prediction", len(pending))
            changes = retry_changes(s, attempt)
            if changes is None:
                break
            retry = build_attack(self.fast_model, s, self.surrogates, **changes)
            res = retry.run([x0[i] for i in pending], labels=clean[pending])
            for k, i in enumerate(pending):
                adv[i], records[i] = res.images[k], res.records[k]
                attempts[i] += 1
        seconds = (time.perf_counter() - t0) / max(1, len(images))
        outcomes = []
        for i, im in enumerate(images):
            v = verified[i]
            ok = v["kept"] and (s.fmt != "png" or v["linf"] <= s.eps + 1e-6)
            msg = "" if ok else (
                f"{im.path}: authorized prediction not kept on the saved file after {attempts[i]} attempt(s)"
                if not v["kept"] else f"{im.path}: L-inf {v['linf']:.5f} exceeds eps {s.eps:.5f}")
            row = {
                "input": str(im.path), "output": str(outputs[i]), "sha256": im.sha256,
                "status": "ok" if ok else "failed", "settings_key": s.key(), "settings": s.to_dict(),
                "size": list(im.size), "mode": im.mode, "attempts": attempts[i], "seconds": round(seconds, 3),
                "record": records[i], "verified": v, "model_class": self._class_name(v["top1"]),
            }
            if msg:
                row["error"] = msg
            outcomes.append(Outcome(im.path, row["status"], msg, row))
        return outcomes

    def _class_name(self, idx: int) -> str | None:
        names = self.model.cfg.class_names
        return names[idx] if names and 0 <= idx < len(names) else None


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a - b) ** 2))
    return math.inf if mse == 0 else round(10 * math.log10(1 / mse), 4)


def _done(manifest: Path, key: str) -> dict[str, dict[str, Any]]:
    """Rows of earlier runs with the same settings that need no redo, by input sha256 + path. Only the latest
    row of each input counts: a later run with other settings has rewritten its output file."""
    if not manifest.exists():
        return {}
    latest = {f"{r['sha256']}:{r['input']}": r for r in io.read_jsonl(manifest) if "sha256" in r}
    return {k: r for k, r in latest.items() if r.get("settings_key") == key and r.get("status") in ("ok", "failed")}


def protect_paths(inputs: Sequence[str | Path], out_dir: str | Path, settings: ProtectSettings,
                  device: str = "auto", batch_size: int = 8, resume: bool = False, max_pixels: int | None = None,
                  progress: bool = True, on_outcome: Callable[[Outcome], None] | None = None,
                  protector: Protector | None = None, prefetch: int = 2,
                  batch_pixels: int | None = 32_000_000) -> Summary:
    """Protect files and folders into ``out_dir``; one manifest row per image; never touches the inputs.

    Decoding runs ahead in a background thread (``prefetch`` batches; 0: in turn) while the model computes;
    a batch also ends before its images would exceed ``batch_pixels`` pixels, bounding memory on large
    photos. Neither changes the outputs.

    Bad files (corrupt, truncated, empty, not an image, too many pixels) are reported one line each and
    the run goes on. With ``resume``, images already in the manifest with the same settings are skipped;
    without it, an existing output file is never overwritten.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prot = protector or Protector(settings, device=device)
    s = prot.settings
    io.write_text_atomic(out / CONFIG, _config_json(s, prot.model))
    manifest = out / MANIFEST
    files, errors = io.find_images(inputs, exclude=out)
    summary = Summary()

    def emit(o: Outcome) -> None:
        summary.outcomes.append(o)
        if o.row:
            io.append_jsonl(manifest, o.row)
        if on_outcome:
            on_outcome(o)

    for e in errors:
        emit(Outcome(Path(e.path), "error", str(e), _error_row(e, s)))
    done = _done(manifest, s.key()) if resume else {}
    targets = output_paths(files, _roots(inputs), out, s.fmt)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(files), unit="img", desc="protect", disable=not progress)
    batch: list[tuple[io.LoadedImage, Path]] = []

    def flush() -> None:
        if batch:
            for o in prot.protect_batch([b[0] for b in batch], [b[1] for b in batch], overwrite=resume):
                emit(o)
            bar.update(len(batch))
            batch.clear()

    def load(path: Path) -> io.LoadedImage:
        return io.load_image(path, **({"max_pixels": max_pixels} if max_pixels else {}))

    for path, im in decode_ahead(files, load, ahead=prefetch * batch_size):
        if isinstance(im, io.ImageError):
            emit(Outcome(path, "error", str(im), _error_row(im, s)))
            bar.update(1)
            continue
        prev = done.get(f"{im.sha256}:{path}")
        target = targets[path]
        if prev is not None and Path(prev["output"]).exists():
            summary.outcomes.append(Outcome(path, "skipped", "already in manifest", prev))
            bar.update(1)
            continue
        if target.exists() and not resume:
            emit(Outcome(path, "error", f"{path}: output {target} already exists (use --resume or another -o)",
                         {}))
            bar.update(1)
            continue
        if batch_pixels and batch and _pixels(batch) + im.rgb[0].numel() > batch_pixels:
            flush()
        batch.append((im, target))
        if len(batch) >= batch_size:
            flush()
    flush()
    bar.close()
    return summary


def _pixels(batch: Sequence[tuple[io.LoadedImage, Path]]) -> int:
    return sum(b[0].rgb[0].numel() for b in batch)


def _map_io(fn: Callable[[int], Any], items: Sequence[int]) -> list[Any]:
    """``[fn(i) for i in items]`` on a few threads (file encoding/decoding), results in order."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(4, len(items)), thread_name_prefix="onlymine-io") as pool:
        return list(pool.map(fn, items))


def decode_ahead(files: Sequence[Path], load: Callable[[Path], io.LoadedImage],
                 ahead: int = 16) -> Iterator[tuple[Path, io.LoadedImage | io.ImageError]]:
    """Yield ``(path, image or its ImageError)`` in order, decoding up to ``ahead`` files in a background
    thread while the caller computes (``ahead <= 0``: decode each file when it is reached)."""

    def attempt(path: Path) -> io.LoadedImage | io.ImageError:
        try:
            return load(path)
        except io.ImageError as e:
            return e

    if ahead <= 0:
        for path in files:
            yield path, attempt(path)
        return
    it = iter(files)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onlymine-decode") as pool:
        queue: deque[tuple[Path, Future[io.LoadedImage | io.ImageError]]] = deque(
            (f, pool.submit(attempt, f)) for f in islice(it, ahead))
        while queue:
            path, fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(attempt, nxt)))
            yield path, fut.result()


def output_paths(files: Sequence[Path], roots: dict[Path, Path], out: Path, fmt: str) -> dict[Path, Path]:
    """Where each input's protected copy goes: ``OUT/<path relative to its input folder>`` with the output
    format's suffix (``photos/x/a.jpg`` -> ``OUT/x/a.png``).

    Inputs that would share an output path (``a.jpg`` and ``a.png`` in one folder, or two ``a.jpg`` files
    given from different folders) keep their full file name instead: ``a.jpg`` -> ``a.jpg.png`` (an input
    already named like the output, ``a.png``, keeps ``a.png``). If names still collide, a short hash of the
    input's resolved path is added: ``a.jpg.1a2b3c4d.png``. Names depend only on the run's inputs, so the
    same command (and ``--resume``) always finds the same files, and no input is lost.
    """
    base = {f: io.output_path(f, roots.get(f), out, fmt) for f in files}
    groups: dict[Path, list[Path]] = {}
    for f, t in base.items():
        groups.setdefault(t, []).append(f)
    result: dict[Path, Path] = {}
    for t, group in groups.items():
        for f in group:
            result[f] = t if len(group) == 1 or f.name == t.name else t.with_name(f.name + t.suffix)
    counts: dict[Path, int] = {}
    for t in result.values():
        counts[t] = counts.get(t, 0) + 1
    for f, t in result.items():
        if counts[t] > 1:
            digest = hashlib.sha256(str(f.resolve()).encode()).hexdigest()[:8]
            result[f] = t.with_name(f"{f.name}.{digest}{t.suffix}")
    return result


def _roots(inputs: Iterable[str | Path]) -> dict[Path, Path]:
    """Map each file found under a folder input to that folder (to mirror sub-folders in the output)."""
    roots: dict[Path, Path] = {}
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            for f in p.rglob("*"):
                roots.setdefault(f, p)
    return roots


def _error_row(e: io.ImageError, s: ProtectSettings) -> dict[str, Any]:
    return {"input": str(e.path), "status": "error", "error": str(e), "settings_key": s.key()}


def _config_json(s: ProtectSettings, model: Classifier) -> str:
    import json

    return json.dumps({"settings": s.to_dict(), "settings_key": s.key(), "model_weights": model.cfg.weights,
                       "pretrained": model.cfg.pretrained, "input_size": model.cfg.input_size}, indent=2) + "\n"
