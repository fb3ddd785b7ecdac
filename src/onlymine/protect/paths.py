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
    out = Path(out_dir)
    files, errors = io.find_images(inputs, exclude=out)
    targets = output_paths(files, _roots(inputs), out, settings.output.fmt)
    note = check_output_folder(out, inputs, files, targets)
    if note:
        (on_note or log.warning)(note)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"-o {out}: cannot create the output folder ({e.strerror or e})") from e
    if protector is None:
        prot = Protector(settings, device=device)
    else:  # a factory is called only once the settings and the output folder have been checked
        prot = protector if isinstance(protector, Protector) else protector()
    s = prot.settings
    manifest = out / MANIFEST
    try:
        io.write_text_atomic(out / CONFIG, config_json(s, prot.model.cfg.weights, prot.model.cfg.pretrained,
                                                       prot.model.cfg.input_size))
    except OSError as e:
        raise ConfigError(f"-o {out}: cannot write {out / CONFIG} ({e.strerror or e})") from e
    ledger = Ledger.read(manifest)
    summary = Summary()

    def emit(o: Outcome) -> None:
        summary.outcomes.append(o)
        if o.row and not summary.stopped:
            try:
                io.append_jsonl(manifest, o.row)
            except OSError as e:
                disk_error(e, manifest)
        if on_outcome:
            on_outcome(o)

    def disk_error(e: OSError, where: Path) -> None:
        if e.errno == errno.ENOSPC and not summary.stopped:
            summary.stopped = (f"{where}: no space left on device; {summary.count('ok')} protected before it; "
                               "free space and rerun with --resume to continue")

    for e in errors:
        emit(Outcome(Path(e.path), "error", str(e), error_row(Path(e.path), str(e), s), "unreadable"))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(files), unit="img", desc="protect", disable=not progress)
    batch: list[tuple[io.LoadedImage, Path, bool, Path | None]] = []

    def flush() -> None:
        if not batch:
            return
        images, outs, overwrite, failed = ([b[k] for b in batch] for k in range(4))
        try:
            outcomes = prot.protect_batch(images, outs, overwrite, stop=stop, failed_outputs=failed)
        except OSError as e:
            disk_error(e, Path(e.filename or outs[0]))
            why = e.strerror or str(e)
            outcomes = [Outcome(im.path, "error", f"{im.path}: cannot write {t} ({why})",
                                error_row(im.path, f"cannot write {t} ({why})", s, im.sha256), "not written")
                        for im, t in zip(images, outs, strict=True)]
        for (im, _, _, stale), o in zip(batch, outcomes, strict=True):
            if o.status == "ok" and stale is not None and stale.exists() and ledger.wrote(stale, im.sha256):
                stale.unlink()  # an earlier failed attempt of this input, now superseded
            emit(o)
        bar.update(len(batch))
        batch.clear()

    def load(path: Path) -> io.LoadedImage:
        return io.load_image(path, **({"max_pixels": max_pixels} if max_pixels else {}))

    try:
        for path, im in decode_ahead(files, load, ahead=prefetch * batch_size):
            if summary.stopped:
                break
            if isinstance(im, io.ImageError):
                emit(Outcome(path, "error", str(im), error_row(path, str(im), s), "unreadable"))
                bar.update(1)
                continue
            prev = ledger.done(im, s.key(), retry_failed) if resume else None
            target = targets[path]
            if prev is not None:
                summary.outcomes.append(Outcome(path, "skipped", "already done (same settings, verified)", prev))
                bar.update(1)
                continue
            mine = ledger.wrote(target, im.sha256)
            if target.exists() and not (resume and mine):
                why = ("use --resume to redo it, or another -o" if mine else
                       "onlymine did not write it (no manifest row from this input); use another -o or move it")
                emit(Outcome(path, "error", f"{path}: output {target} already exists; {why}", {}, "not written"))
                bar.update(1)
                continue
            if batch_pixels and batch and sum(b[0].rgb[0].numel() for b in batch) + im.rgb[0].numel() > batch_pixels:
                flush()
            failed = failed_name(target)  # where a file that fails verification goes (never a file of the user's)
            failed_ok = not failed.exists() or ledger.wrote(failed, im.sha256)
            batch.append((im, target, mine, failed if failed_ok else None))
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
