"""One manifest row per image, built here and nowhere else; what ``--resume`` may skip and what it may rewrite."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from onlymine import io
from onlymine.metrics import psnr
from onlymine.settings import ProtectSettings

MANIFEST = "manifest.jsonl"
CONFIG = "config.json"


@dataclass
class Outcome:
    """One image's fate; ``row`` is its manifest line."""

    path: Path
    status: str  # ok | failed | error | skipped
    message: str = ""
    row: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # for errors: unreadable | not written | nothing to protect


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: str = ""  # why the run stopped early (a full disk), else empty

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and self.count("error") == 0 and not self.stopped


def source(path: Path) -> str:
    """The resume identity of an input: its resolved path (with its sha256, a row's key)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return str(path.absolute())


def file_check(original: torch.Tensor, reread: torch.Tensor, start: torch.Tensor) -> dict[str, Any]:
    """What the re-read file says beside the predictions: L-inf against the attack's start (the 8-bit image the
    budget applies to) and against the decoded original, PSNR against the original."""
    return {"linf": float((reread - start).abs().max()), "linf_vs_original": float((reread - original).abs().max()),
            "psnr": round(psnr(original, reread), 4)}


def make_row(image: io.LoadedImage, output: Path | None, s: ProtectSettings, ok: bool, attempts: int,
             seconds: float, record: Any, verified: dict[str, Any], model_class: Any, message: str = "",
             **extra: Any) -> dict[str, Any]:
    row = {"input": str(image.path), "source": source(image.path), "output": str(output) if output else None,
           "sha256": image.sha256, "status": "ok" if ok else "failed", "settings_key": s.key(),
           "settings": s.to_dict(), "size": list(image.size), "mode": image.mode, "attempts": attempts,
           "seconds": round(seconds, 3), "record": record, "verified": verified, "model_class": model_class, **extra}
    if message:
        row["error"] = message
    return row


def error_row(path: Path, message: str, s: ProtectSettings, sha256: str | None = None) -> dict[str, Any]:
    row = {"input": str(path), "source": source(path), "status": "error", "error": message, "settings_key": s.key()}
    if sha256:
        row["sha256"] = sha256
    return row


def config_json(s: ProtectSettings, weights: str, pretrained: bool, input_size: Any) -> str:
    return json.dumps({"settings": s.to_dict(), "settings_key": s.key(), "model_weights": weights,
                       "pretrained": pretrained, "input_size": input_size}, indent=2) + "\n"


class Claims:
    """What onlymine records in ``OUT/.onlymine/claims`` just before it publishes an output: the output and the
    sha256 of its input. A run killed between publishing a file and appending its manifest row (a full disk, kill
    -9, a Ray worker lost mid-batch) thus still knows the file is its own, and may replace it when it redoes it."""

    def __init__(self, out: Path) -> None:
        self.dir = out / ".onlymine" / "claims"

    def _path(self, output: Path) -> Path:
        return self.dir / (hashlib.sha256(source(output).encode()).hexdigest()[:24] + ".json")

    def record(self, output: Path, sha256: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        io.write_text_atomic(self._path(output), json.dumps({"output": source(output), "sha256": sha256}) + "\n")

    def drop(self, output: Path) -> None:
        """Take back the claim on ``output`` (its publish failed: the path may hold someone else's file)."""
        self._path(output).unlink(missing_ok=True)

    def says(self, output: Path, sha256: str) -> bool:
        try:
            d = json.loads(self._path(output).read_text())
        except (OSError, ValueError):
            return False
        return d.get("output") == source(output) and d.get("sha256") == sha256


@dataclass
class Ledger:
    """What the manifest of an output folder says onlymine wrote: the latest row per (source, sha256), and the
    claims it recorded before publishing files."""

    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # resolved output path -> sha256 of its input
    claims: Claims | None = None

    @classmethod
    def read(cls, manifest: Path, claims: Claims | None = None) -> Ledger:
        led = cls(claims=claims)
        for r in io.read_jsonl(manifest):
            if "sha256" not in r or "input" not in r:
                continue
            key = (r.get("source") or source(Path(r["input"])), r["sha256"])
            led.latest[key] = r
            if r.get("output") and r.get("status") in ("ok", "failed"):
                led.outputs[source(Path(r["output"]))] = r["sha256"]
        return led

    def done(self, image: io.LoadedImage, key: str, retry_failed: bool = True) -> dict[str, Any] | None:
        """The row that makes ``image`` need no redo: its latest row has the same settings, was verified ok (or
        failed, with ``retry_failed=False``), and its output file is still there."""
        r = self.latest.get((source(image.path), image.sha256))
        done = ("ok",) if retry_failed else ("ok", "failed")
        ok = r is not None and r.get("settings_key") == key and r.get("status") in done
        return r if ok and r.get("output") and Path(r["output"]).exists() else None

    def wrote(self, output: Path, sha256: str) -> bool:
        """Whether onlymine wrote ``output`` from an input with this content (so a rerun may replace it)."""
        return self.outputs.get(source(output)) == sha256 or (self.claims is not None and
                                                               self.claims.says(output, sha256))
