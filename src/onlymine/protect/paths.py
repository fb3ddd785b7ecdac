"""``protect_paths``: files and folders in, protected copies and one manifest out, under the output rule:

onlymine writes only files it creates in its output folder, or files that its own manifest says it wrote from
an input with the same content; it never writes over an input, and it refuses an output folder where an output
would land on an input. Every problem with one file is one line and the run goes on; a full disk stops the run
cleanly (what was written stays, ``--resume`` continues).
"""

from __future__ import annotations

import errno
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

from onlymine import io
from onlymine.attacks.base import Cancelled
from onlymine.attacks.config import ConfigError
from onlymine.protect.loop import Protector, failed_name
from onlymine.protect.manifest import (
    CONFIG,
    MANIFEST,
    Claims,
    Ledger,
    Outcome,
    Summary,
    config_json,
    error_row,
    source,
)
from onlymine.settings import ProtectSettings

log = logging.getLogger(__name__)


def check_output_folder(out: Path, inputs: Sequence[str | Path], files: Sequence[Path],
                        targets: dict[Path, Path]) -> str:
    """Refuse an output folder that is a file, that is or holds an input folder, or where an output would be an
    input; returns a one-line note when it holds input files but no output can land on one (else '')."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: is a file, not a folder")
    here = source(out)
    for d in (Path(i) for i in inputs):
        if d.is_dir() and (source(d) == here or source(d).startswith(here + "/")):
            raise ConfigError(f"-o {out}: is or holds the input folder {d}; choose an output folder outside it "
                              f"(one inside it, like {d / 'protected'}, is fine)")
    given = {source(f): f for f in files}
    for f, t in targets.items():
        if source(t) in given:
            raise ConfigError(f"-o {out}: the protected copy of {f} would be written over the input "
                              f"{given[source(t)]}; choose an output folder outside the input folders")
    holds = [f for f in files if source(f.parent) == here or source(f.parent).startswith(here + "/")]
    if holds:
        return (f"note: {out} holds {len(holds)} input file(s) (e.g. {holds[0]}); no output can land on an input, "
                "and files onlymine did not write there are never replaced")
    return ""


class Run:
    """One run into one output folder: the plan (inputs, their targets), the ledger of what onlymine wrote there
    (the manifest, and the claims it records before it publishes a file) and the manifest it appends to.

    The local loop (:func:`protect_paths`) and the Ray workers (:mod:`onlymine.distributed`) both decide with
    :meth:`admit` and protect with :meth:`protect`; only the process that emits appends to the manifest."""

    def __init__(self, inputs: Sequence[str | Path], out_dir: str | Path, settings: ProtectSettings,
                 on_note: Callable[[str], None] | None = None, check: bool = True,
                 ledger: Ledger | None = None) -> None:
        self.out = Path(out_dir)
        self.files, self.errors = io.find_images(inputs, exclude=self.out) if check else ([], [])
        self.targets = output_paths(self.files, _roots(inputs), self.out, settings.output.fmt) if check else {}
        if check:
            note = check_output_folder(self.out, inputs, self.files, self.targets)
            if note:
                (on_note or log.warning)(note)
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"-o {self.out}: cannot create the output folder ({e.strerror or e})") from e
        self.manifest = self.out / MANIFEST
        self.claims = Claims(self.out)
        self.ledger = ledger if ledger is not None else Ledger.read(self.manifest, self.claims)
        self.summary = Summary()

    def begin(self, prot: Protector) -> None:
        """Write ``config.json`` (the resolved settings) once the protector exists."""
        s, cfg = prot.settings, prot.model.cfg
        try:
            io.write_text_atomic(self.out / CONFIG, config_json(s, cfg.weights, cfg.pretrained, cfg.input_size))
        except OSError as e:
            raise ConfigError(f"-o {self.out}: cannot write {self.out / CONFIG} ({e.strerror or e})") from e

    def admit(self, im: io.LoadedImage, target: Path, key: str, resume: bool,
              retry_failed: bool = True) -> Outcome | tuple[io.LoadedImage, Path, bool, Path | None]:
        """What to do with ``im``: an outcome (already done, or its target belongs to someone else), or the item
        to protect: (image, target, whether the target may be replaced, where a failed file goes)."""
        prev = self.ledger.done(im, key, retry_failed) if resume else None
        if prev is not None:
            return Outcome(im.path, "skipped", "already done (same settings, verified)", prev)
        mine = self.ledger.wrote(target, im.sha256)
        if target.exists() and not (resume and mine):
            why = ("use --resume to redo it, or another -o" if mine else
                   "onlymine did not write it (no manifest row from this input); use another -o or move it")
            return Outcome(im.path, "error", f"{im.path}: output {target} already exists; {why}", {}, "not written")
        failed = failed_name(target)  # where a file that fails verification goes (never a file of the user's)
        failed_ok = not failed.exists() or self.ledger.wrote(failed, im.sha256)
        return im, target, mine, failed if failed_ok else None

    def protect(self, prot: Protector, batch: Sequence[tuple[io.LoadedImage, Path, bool, Path | None]],
                stop: Callable[[], bool] | None = None) -> list[Outcome]:
        """Protect ``batch`` (items from :meth:`admit`) through the one loop; an OS error on output is one line
        per file (and a full disk stops the run)."""
        images, outs, overwrite, failed = ([b[k] for b in batch] for k in range(4))
        try:
            outcomes = prot.protect_batch(images, outs, overwrite, stop=stop, failed_outputs=failed,
                                          claim=self.claims)
        except OSError as e:
            self.disk_error(e, Path(e.filename or outs[0]))
            why, s = e.strerror or str(e), prot.settings
            return [Outcome(im.path, "error", f"{im.path}: cannot write {t} ({why})",
                            error_row(im.path, f"cannot write {t} ({why})", s, im.sha256), "not written")
                    for im, t in zip(images, outs, strict=True)]
        for (im, _, _, stale), o in zip(batch, outcomes, strict=True):
            if o.status == "ok" and stale is not None and stale.exists() and self.ledger.wrote(stale, im.sha256):
                stale.unlink()  # an earlier failed attempt of this input, now superseded
        return outcomes

    def emit(self, o: Outcome, on_outcome: Callable[[Outcome], None] | None = None) -> None:
        self.summary.outcomes.append(o)
        if o.row and o.status != "skipped" and not self.summary.stopped:
            try:
                io.append_jsonl(self.manifest, o.row)
            except OSError as e:
                self.disk_error(e, self.manifest)
        if on_outcome:
            on_outcome(o)

    def disk_error(self, e: OSError, where: Path) -> None:
        if e.errno == errno.ENOSPC and not self.summary.stopped:
            self.summary.stopped = (f"{where}: no space left on device; {self.summary.count('ok')} protected before "
                                    "it; free space and rerun with --resume to continue")


def make_protector(protector: Protector | Callable[[], Protector] | None, settings: ProtectSettings,
                   device: str) -> Protector:
    if protector is None:
        return Protector(settings, device=device)
    return protector if isinstance(protector, Protector) else protector()


def protect_paths(inputs: Sequence[str | Path], out_dir: str | Path, settings: ProtectSettings,
                  device: str = "auto", batch_size: int = 8, resume: bool = False, max_pixels: int | None = None,
                  progress: bool = True, on_outcome: Callable[[Outcome], None] | None = None,
                  protector: Protector | Callable[[], Protector] | None = None, prefetch: int = 2,
                  batch_pixels: int | None = 32_000_000,
                  on_note: Callable[[str], None] | None = None, stop: Callable[[], bool] | None = None,
                  retry_failed: bool = True) -> Summary:
    """Protect files and folders into ``out_dir`` (module docstring: the output rule); one manifest row per image.

    Decoding runs ahead in a background thread (``prefetch`` batches; 0: in turn) while the model computes;
    a batch also ends before its images would exceed ``batch_pixels`` pixels, bounding memory on large
    photos. Neither changes the outputs. With ``resume``, images whose latest row has the same settings and
    passed verification are skipped, and failed ones are retried (``retry_failed=False``: skipped too, for
    baselines that are expected to fail). ``stop`` is asked between attack steps.
    ``protector``: a :class:`Protector`, or a function making one (called after the checks). Raises
    :class:`ConfigError` (one line) for a bad setting or output folder, before any model loads.
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    run = Run(inputs, out_dir, settings, on_note)
    prot = make_protector(protector, settings, device)  # after the checks: a bad output folder loads no model
    run.begin(prot)
    s, summary = prot.settings, run.summary
    for e in run.errors:
        run.emit(Outcome(Path(e.path), "error", str(e), error_row(Path(e.path), str(e), s), "unreadable"), on_outcome)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(run.files), unit="img", desc="protect", disable=not progress)
    batch: list[tuple[io.LoadedImage, Path, bool, Path | None]] = []

    def flush() -> None:
        if batch:
            for o in run.protect(prot, batch, stop):
                run.emit(o, on_outcome)
            bar.update(len(batch))
            batch.clear()

    def load(path: Path) -> io.LoadedImage:
        return io.load_image(path, **({"max_pixels": max_pixels} if max_pixels else {}))

    try:
        for path, im in decode_ahead(run.files, load, ahead=prefetch * batch_size):
            if summary.stopped:
                break
            if isinstance(im, io.ImageError):
                run.emit(Outcome(path, "error", str(im), error_row(path, str(im), s), "unreadable"), on_outcome)
                bar.update(1)
                continue
            item = run.admit(im, run.targets[path], s.key(), resume, retry_failed)
            if isinstance(item, Outcome):
                run.emit(item, on_outcome)
                bar.update(1)
                continue
            if batch_pixels and batch and sum(b[0].rgb[0].numel() for b in batch) + im.rgb[0].numel() > batch_pixels:
                flush()
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        if not summary.stopped:
            flush()
    except Cancelled:
        batch.clear()
        summary.stopped = "cancelled"
    bar.close()
    return summary


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
    input's resolved path is added: ``a.jpg.1a2b3c4d.png``; so it is for an input whose output would be another
    input's failed name (``a.failed.jpg`` beside ``a.jpg``). Names depend only on the run's inputs, so the
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
            digest = hashlib.sha256(source(f).encode()).hexdigest()[:8]
            result[f] = t.with_name(f"{f.name}.{digest}{t.suffix}")
    reserved = {failed_name(t) for t in result.values()}  # where another input's failed file would be kept
    for f, t in result.items():
        if t in reserved:
            digest = hashlib.sha256(source(f).encode()).hexdigest()[:8]
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
