"""Finding the photos of the inputs: files and folders -> a sorted, duplicate-free list, and one error per
problem (missing, unreadable, a link that loops, a format onlymine does not protect)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from onlymine.io.loading import IMAGE_SUFFIXES, UNSUPPORTED_SUFFIXES, ImageError

# --------------------------------------------------------------------------------------------------- finding


def find_images(
    inputs: Sequence[str | os.PathLike[str]], exclude: Path | None = None
) -> tuple[list[Path], list[ImageError]]:
    """Expand files and folders into a deterministic, duplicate-free list of image paths.

    Folders are searched recursively (sorted) for files whose suffix is in :data:`IMAGE_SUFFIXES`
    (case-insensitive), skipping hidden files/folders and anything under ``exclude`` (the output folder).
    An explicitly named file is always kept, whatever its suffix; :func:`load_image` reports it if unusable.
    Missing paths and unreadable folders are returned as errors instead of raising.
    """
    found: list[Path] = []
    errors: list[ImageError] = []
    excluded = _resolved(exclude) if exclude is not None else None
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found.extend(_walk_images(path, excluded, errors))
        elif path.is_file():
            found.append(path)
        elif path.is_symlink():
            errors.append(ImageError(path, "broken or looping symbolic link"))
        elif path.exists():
            errors.append(ImageError(path, "not a regular file or folder"))
        else:
            errors.append(ImageError(path, "no such file or directory"))
    return _unique(found, errors), errors


def _resolved(path: Path) -> Path | None:
    """``path.resolve()``, or ``None`` for a symbolic link that loops (resolve raises then)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _walk_images(root: Path, excluded: Path | None, errors: list[ImageError]) -> list[Path]:
    """All visible image files below ``root``, sorted, skipping the ``excluded`` tree."""

    def on_error(exc: OSError) -> None:
        errors.append(ImageError(exc.filename or root, f"cannot read folder ({exc.strerror or exc})"))

    images: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):  # os.walk never follows folder links
        here = Path(dirpath)
        if _is_within(here, excluded):
            dirnames.clear()
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not _is_within(here / d, excluded)]
        for name in filenames:
            suffix = Path(name).suffix.lower()
            if name.startswith("."):
                continue
            if suffix in IMAGE_SUFFIXES:
                images.append(here / name)
            elif suffix in UNSUPPORTED_SUFFIXES:
                errors.append(ImageError(here / name, f"unsupported image type '{suffix}' (supported: "
                                                      f"{', '.join(sorted(IMAGE_SUFFIXES))}); skipped"))
    return sorted(images)


def _is_within(path: Path, root: Path | None) -> bool:
    """Whether ``path`` is ``root`` or lies below it (after resolving links)."""
    resolved = _resolved(path) if root is not None else None
    return resolved is not None and root is not None and resolved.is_relative_to(root)


def _unique(paths: list[Path], errors: list[ImageError]) -> list[Path]:
    """Drop later duplicates (same resolved file), keeping the first spelling and the order; a symbolic link that
    loops or points nowhere becomes an error."""
    seen: set[Path] = set()
    kept: list[Path] = []
    for path in paths:
        key = _resolved(path)
        if key is None or not key.exists():
            errors.append(ImageError(path, "broken or looping symbolic link"))
        elif key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


