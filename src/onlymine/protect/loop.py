"""The one protect loop: prepare a batch, attack, compose, save atomically, re-read, verify, retry, one row each.

What is protected in a photo is the target's business (:mod:`onlymine.protect.targets`: the whole image;
:mod:`onlymine.faces.protect`: its face regions); everything else happens here, once, for both.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from onlymine import io
from onlymine.attacks import Attack
from onlymine.attacks.defaults import layers_for, resolve
from onlymine.models import Classifier, load_model
from onlymine.models.fast import fast_classifier, resolve_precision
from onlymine.protect.build import build_attack, load_surrogates, retry_changes
from onlymine.protect.manifest import Claims, Outcome, error_row, file_check, make_row
from onlymine.protect.targets import Batch, Target, WholeImage
from onlymine.runtime import keep_freed_memory, pick_device
from onlymine.settings import ProtectSettings

log = logging.getLogger(__name__)

class Protector:
    """Protects decoded images with one authorized model and verifies the saved files.

    Args:
        settings: a :class:`ProtectSettings` (its per-model defaults are resolved against the model here).
        device: ``auto`` | ``cpu`` | ``cuda`` | ...
        model: an already loaded :class:`Classifier` (else ``settings.model`` is loaded).
    """

    def __init__(self, settings: ProtectSettings, device: str = "auto", model: Classifier | None = None) -> None:
        self.device = pick_device(device)
        if settings.runtime.keep_memory:
            keep_freed_memory()
        self.model = model if model is not None else load_model(settings.model, device=self.device)
        self.target = self.make_target()
        r = settings.runtime
        precision = resolve_precision(r.precision, self.device)
        self.settings = replace(settings, config=resolve(settings.config, self.target.attack_model(), precision))
        # the attack runs on a faster copy of the model (same function); verification uses the model itself
        keep = list(getattr(self.settings.config, "layers", ()) or layers_for("fmd", self.model))
        self.fast_model = fast_classifier(self.model, keep=keep, fold_bn=r.fold_bn, channels_last=r.channels_last,
                                          precision=r.precision, compile=r.compile, fuse=r.fuse)
        self.surrogates = self.load_surrogates()

    def make_target(self) -> Target:
        return WholeImage(self)

    def load_surrogates(self) -> list[tuple[Classifier, list[str]]]:
        """The config's surrogates, each as a faster copy like the authorized model's."""
        s, r = self.settings, self.settings.runtime
        return [(fast_classifier(m, keep=names, fold_bn=r.fold_bn, channels_last=r.channels_last,
                                 precision=r.precision, fuse=r.fuse), names)
                for m, names in load_surrogates(getattr(s.config, "surrogates", ()), s.model, self.device)]

    @property
    def attack(self) -> Attack:
        """The attack of a whole-image batch (what ``protect_batch`` runs first)."""
        return build_attack(self.fast_model, self.settings, self.surrogates)

    def protect_batch(self, images: Sequence[io.LoadedImage], outputs: Sequence[Path],
                      may_overwrite: Sequence[bool] | None = None, stop: Callable[[], bool] | None = None,
                      failed_outputs: Sequence[Path | None] | None = None,
                      claim: Claims | None = None) -> list[Outcome]:
        """Attack, save atomically, re-read and verify; re-optimise photos whose saved file loses the authorized
        prediction, and report those that still do as failed.

        ``may_overwrite[i]``: whether ``outputs[i]`` may replace a file that is there (one this run's manifest says
        onlymine wrote from the same input). A failed file is renamed to ``failed_outputs[i]`` (default
        ``NAME.failed.png`` beside it; ``None``: removed), so no file under the normal name is one that failed.
        ``stop`` is asked between attack steps (raises ``Cancelled``); ``claim`` records each output before it is first
        published, and takes the record back if publishing fails (:class:`~onlymine.protect.manifest.Claims`)."""
        s, t0 = self.settings, time.perf_counter()
        b = self.target.prepare(list(images))
        n_items = len(b.inputs)
        adv: list[torch.Tensor | None] = [None] * n_items
        records: list[dict[str, Any]] = [{} for _ in range(n_items)]
        attempts = [1] * len(images)

        def optimise(items: list[int], changes: dict[str, Any]) -> None:
            if not items:
                return
            attack = self.target.attack(b, items, changes)
            res = attack.run([b.inputs[k] for k in items], labels=b.labels[items], stop=stop)
            for j, k in enumerate(items):
                adv[k], records[k] = res.images[j], res.records[j]

        optimise(list(range(n_items)), {})
        written = [False] * len(images)
        verified: dict[int, dict[str, Any]] = {}
        pending = [i for i in range(len(images)) if i not in b.skip]
        for attempt in range(s.output.retries + 1):
            def save(i: int) -> tuple[torch.Tensor, Any]:
                im = images[i]
                overwrite = written[i] or bool(may_overwrite and may_overwrite[i])
                claimed = claim is not None and not written[i]
                if claimed:
                    claim.record(outputs[i], im.sha256)
                try:
                    io.save_image(outputs[i], self.target.compose(b, i, adv), im.alpha, fmt=s.output.fmt,
                                  quality=s.output.quality, icc_profile=im.icc_profile, overwrite=overwrite)
                except BaseException:
                    if claimed:  # not published: whatever is at that path is not ours
                        claim.drop(outputs[i])
                    raise
                written[i] = True
                return io.load_image(outputs[i]).rgb, io.open_rgb(outputs[i])

            files = _map_io(save, pending)  # encoders/decoders release the GIL: in parallel
            for i, (reread, pil) in zip(pending, files, strict=True):
                verified[i] = {**self.target.verify(b, i, reread, pil),
                               **file_check(images[i].rgb.to(reread.device), reread, b.x0[i].to(reread.device))}
            pending = [i for i in pending if not verified[i]["kept"]]
            changes = retry_changes(s, attempt)
            if not pending or attempt == s.output.retries or changes is None:
                break
            log.info("re-optimising %d photo(s) whose saved file lost the authorized prediction", len(pending))
            optimise([k for k in range(n_items) if b.photo_of[k] in pending], changes)
            for i in pending:
                attempts[i] += 1
        seconds = (time.perf_counter() - t0) / max(1, len(images))
        failed = list(failed_outputs) if failed_outputs is not None else [failed_name(o) for o in outputs]
        return [self._outcome(b, i, outputs[i], failed[i], verified.get(i), records, attempts[i], seconds, claim)
                for i in range(len(images))]

    def _outcome(self, b: Batch, i: int, out: Path, failed: Path | None, v: dict[str, Any] | None,
                 records: list[dict[str, Any]], attempts: int, seconds: float,
                 claim: Claims | None = None) -> Outcome:
        s, im = self.settings, b.images[i]
        if v is None:
            msg = f"{im.path}: {b.skip[i]}"
            return Outcome(im.path, "error", msg, error_row(im.path, msg, s, im.sha256), "nothing to protect")
        ok = v["kept"] and (s.output.fmt != "png" or v["linf"] <= s.config.eps + 1e-6)
        msg = "" if ok else (f"{im.path}: {self.target.lost(b, i, v)} on the saved file after {attempts} attempt(s)"
                             if not v["kept"] else f"{im.path}: L-inf {v['linf']:.5f} exceeds eps {s.config.eps:.5f}")
        kept_as: Path | None = out
        if not ok:  # no file under the normal name is one that failed: it says so in its name, or is gone
            kept_as = failed
            if failed is None:
                out.unlink(missing_ok=True)
            else:
                if claim is not None:
                    claim.record(failed, im.sha256)
                os.replace(out, failed)
        mine = [records[k] for k in range(len(b.inputs)) if b.photo_of[k] == i]
        row = make_row(im, kept_as, s, ok, attempts, seconds, self.target.record(mine), v,
                       self.target.class_names(v), msg, **self.target.row_extra(b, i, v))
        return Outcome(im.path, row["status"], msg, row)


def failed_name(path: Path) -> Path:
    """Where a file that failed verification is kept: ``a.png`` -> ``a.failed.png``."""
    return path.with_name(f"{path.stem}.failed{path.suffix}")


def _map_io(fn: Callable[[int], Any], items: Sequence[int]) -> list[Any]:
    """``[fn(i) for i in items]`` on a few threads (file encoding/decoding), results in order."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(4, len(items)), thread_name_prefix="onlymine-io") as pool:
        return list(pool.map(fn, items))
