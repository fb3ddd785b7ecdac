"""Writing: 8-bit quantization, atomic saves that never overwrite by accident (no metadata but the ICC profile),
and the JSONL manifest."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

# Canonical output format -> (Pillow format name, file suffix). Aliases map onto these names.
_FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", ".png"),
    "jpeg": ("JPEG", ".jpg"),
    "webp": ("WEBP", ".webp"),
    "tiff": ("TIFF", ".tif"),
}
_FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}

# ---------------------------------------------------------------------------------------------- quantization


def _levels(values: torch.Tensor) -> torch.Tensor:
    """Integer 8-bit levels (as float32) with round-half-up: ``floor(clamp(x, 0, 1) * 255 + 0.5)``."""
    x = torch.nan_to_num(values.detach().to(torch.float32), nan=0.0).clamp(0.0, 1.0)
    return torch.floor(x * 255.0 + 0.5)


def _check_rgb(rgb: torch.Tensor) -> None:
    """Require a ``(3, H, W)`` tensor."""
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected an RGB tensor of shape (3, H, W), got {tuple(rgb.shape)}")


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in ``[0, 1]`` -> ``(H, W, 3)`` uint8 (round half up, clamped)."""
    _check_rgb(rgb)
    return _levels(rgb).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


def quantize(rgb: torch.Tensor) -> torch.Tensor:
    """The float32 tensor exactly as it comes back after an 8-bit save and :func:`load_image`."""
    return _levels(rgb) / 255.0


def to_pil(rgb: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` float in ``[0, 1]`` -> the 8-bit RGB PIL image an 8-bit save would hold."""
    return Image.fromarray(to_uint8(rgb))


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """A saved file as a model owner's code reads it: ``Image.open(path).convert("RGB")`` (no onlymine decoding)."""
    with Image.open(path) as image:
        return image.convert("RGB")


# ---------------------------------------------------------------------------------------------------- saving


def _canonical_format(fmt: str) -> str:
    """Normalize a format name (``'jpg'`` -> ``'jpeg'``, ``'tif'`` -> ``'tiff'``) or raise ValueError."""
    name = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
    if name not in _FORMATS:
        raise ValueError(f"unsupported output format {fmt!r} (choose from {', '.join(_FORMATS)})")
    return name


def output_path(input_path: Path, input_root: Path | None, out_dir: Path, fmt: str) -> Path:
    """Where the protected copy of ``input_path`` goes: its path relative to ``input_root`` (just the file name
    when ``input_root`` is None) under ``out_dir``, with the suffix of ``fmt``."""
    suffix = _FORMATS[_canonical_format(fmt)][1]
    relative = (
        Path(input_path.name) if input_root is None else _relative_to(Path(input_path), Path(input_root))
    )
    return Path(out_dir) / relative.with_suffix(suffix)


def _relative_to(path: Path, root: Path) -> Path:
    """``path`` relative to ``root``, trying the paths as given first and then resolved."""
    try:
        return path.relative_to(root)
    except ValueError:
        return path.resolve().relative_to(root.resolve())


def save_image(
    path: str | os.PathLike[str],
    rgb: torch.Tensor,
    alpha: torch.Tensor | None = None,
    fmt: str = "png",
    quality: int = 95,
    icc_profile: bytes | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an 8-bit image atomically and return its path.

    Only the ICC profile is written as metadata (no EXIF/GPS). PNG, WebP and TIFF keep ``alpha`` (RGBA);
    JPEG drops it with a warning and uses 4:4:4 chroma. WebP is lossless when ``quality >= 100``.
    Raises FileExistsError if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = _canonical_format(fmt)
    if fmt == "jpeg" and alpha is not None:
        logger.warning("%s: JPEG has no alpha channel; transparency is dropped", path)
        alpha = None
    image = _to_pil(path, rgb, alpha)
    with _atomic_writer(path, overwrite) as handle:
        image.save(handle, format=_FORMATS[fmt][0], **_save_options(fmt, quality, icc_profile))
    return path


def _to_pil(path: Path, rgb: torch.Tensor, alpha: torch.Tensor | None) -> Image.Image:
    """Build an RGB or RGBA Pillow image (no metadata) from float tensors."""
    pixels = to_uint8(rgb)
    if alpha is None:
        return Image.fromarray(pixels)
    height, width = pixels.shape[:2]
    if alpha.numel() != height * width:
        raise ValueError(
            f"{path}: alpha of shape {tuple(alpha.shape)} does not match image size {height}x{width}"
        )
    alpha8 = _levels(alpha.reshape(height, width)).to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.dstack([pixels, alpha8]))


def _save_options(fmt: str, quality: int, icc_profile: bytes | None) -> dict[str, Any]:
    """Pillow ``save`` keyword arguments for ``fmt``."""
    options: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "jpeg":
        options.update(quality=quality, subsampling=0)
    elif fmt == "webp":
        options.update(lossless=True, exact=True) if quality >= 100 else options.update(quality=quality)
    elif fmt == "tiff":
        options.update(compression="tiff_adobe_deflate")
    return options


@contextmanager
def _atomic_writer(path: Path, overwrite: bool) -> Iterator[BinaryIO]:
    """Yield a new hidden temp file next to ``path``; on success fsync it and move it into place.

    On any error the temp file is removed and ``path`` is left untouched.
    """
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: already exists (refusing to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open (unlike mkstemp's 0600) lets the umask decide the final file's permissions.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _publish(temp, path, overwrite)
        _fsync_dir(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def _publish(temp: Path, path: Path, overwrite: bool) -> None:
    """Move ``temp`` to ``path``; without ``overwrite`` an existing ``path`` is never replaced (no race)."""
    if overwrite:
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # fails atomically if path exists
    except FileExistsError:
        raise FileExistsError(f"{path}: already exists (refusing to overwrite)") from None
    except OSError:  # hard links unsupported (some network/FAT file systems): best effort
        if path.exists():
            raise FileExistsError(f"{path}: already exists (refusing to overwrite)") from None
        os.replace(temp, path)


def _fsync_dir(folder: Path) -> None:
    """Best-effort fsync of a folder so that a rename survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- text / jsonl


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically, creating parent folders."""
    with _atomic_writer(Path(path), overwrite=True) as handle:
        handle.write(text.encode("utf-8"))


def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append ``row`` as one JSON line, then flush and fsync.

    If a crash left a partial last line, a newline is written first so the new row stays readable.
    Non-JSON values (e.g. paths) are written as strings.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    with open(path, "ab") as handle:
        if handle.tell() > 0 and not _ends_with_newline(path):
            line = b"\n" + line
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _ends_with_newline(path: Path) -> bool:
    """Whether the (non-empty) file ends with a newline byte."""
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All JSON object rows of a JSONL file ([] if it does not exist); unparsable lines are skipped with
    a warning (a crash can leave a partial line)."""
    path = Path(path)
    if not path.exists():
        return []
    return list(_parse_jsonl(path))


def _parse_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each line that parses as a JSON object, warning about the others."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping unparsable line (partial write?)", path, number)
                continue
            if isinstance(row, dict):
                yield row
            else:
                logger.warning("%s:%d: skipping line that is not a JSON object", path, number)
