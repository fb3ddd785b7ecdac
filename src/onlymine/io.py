"""Image and file input/output for onlymine.

Loading turns any supported photo into a float32 ``(3, H, W)`` tensor in ``[0, 1]`` at full resolution
(EXIF orientation applied, alpha split off), with clear one-line :class:`ImageError` messages for bad
inputs. Saving is atomic, never overwrites by accident and writes no metadata except the ICC profile.
:func:`quantize` predicts exactly what an 8-bit save followed by :func:`load_image` gives back.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
MAX_PIXELS_DEFAULT = 64_000_000

# Canonical output format -> (Pillow format name, file suffix). Aliases map onto these names.
_FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", ".png"),
    "jpeg": ("JPEG", ".jpg"),
    "webp": ("WEBP", ".webp"),
    "tiff": ("TIFF", ".tif"),
}
_FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_PLAIN_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "YCbCr", "CMYK"})
_CHUNK = 1 << 20


class ImageError(Exception):
    """A user-facing, one-line problem with one input file: ``'<path>: <problem>'``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(path, problem)
        self.path = Path(path)
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class LoadedImage:
    """A decoded image ready for the pipeline.

    ``rgb`` is float32 ``(3, H, W)`` in ``[0, 1]`` (full resolution, EXIF orientation applied); ``alpha`` is
    float32 ``(1, H, W)`` or ``None`` and is carried through unperturbed. ``mode`` is the original Pillow mode,
    ``bit_depth`` is 8 or 16 and ``sha256`` is the hex digest of the input file bytes.
    """

    path: Path
    rgb: torch.Tensor
    alpha: torch.Tensor | None
    icc_profile: bytes | None
    mode: str
    bit_depth: int
    sha256: str

    @property
    def size(self) -> tuple[int, int]:
        """Image size as ``(H, W)``."""
        height, width = self.rgb.shape[-2:]
        return int(height), int(width)


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
    excluded = exclude.resolve() if exclude is not None else None
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found.extend(_walk_images(path, excluded, errors))
        elif path.is_file():
            found.append(path)
        elif path.exists():
            errors.append(ImageError(path, "not a regular file or folder"))
        else:
            errors.append(ImageError(path, "no such file or directory"))
    return _unique(found), errors


def _walk_images(root: Path, excluded: Path | None, errors: list[ImageError]) -> list[Path]:
    """All visible image files below ``root``, sorted, skipping the ``excluded`` tree."""

    def on_error(exc: OSError) -> None:
        errors.append(ImageError(exc.filename or root, f"cannot read folder ({exc.strerror or exc})"))

    images: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        here = Path(dirpath)
        if _is_within(here, excluded):
            dirnames.clear()
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not _is_within(here / d, excluded)]
        images.extend(
            here / name
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
    return sorted(images)


def _is_within(path: Path, root: Path | None) -> bool:
    """Whether ``path`` is ``root`` or lies below it (after resolving links)."""
    return root is not None and path.resolve().is_relative_to(root)


def _unique(paths: list[Path]) -> list[Path]:
    """Drop later duplicates (same resolved file), keeping the first spelling and the order."""
    seen: set[Path] = set()
    kept: list[Path] = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


# --------------------------------------------------------------------------------------------------- loading


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS_DEFAULT) -> LoadedImage:
    """Decode one image file completely; every problem is raised as :class:`ImageError`.

    The size is checked against ``max_pixels`` before any pixel data is decoded; truncated or corrupt data
    is detected by forcing a full decode. Animated images contribute their first frame (with a warning).
    """
    path = Path(path)
    data = _read_image_bytes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open_image(path, data) as image:
            _check_pixel_count(path, image.size, max_pixels)
            _decode_fully(path, image)
            _warn_if_animated(path, image)
            mode = image.mode
            oriented = _exif_transpose(path, image)
    try:
        rgb, alpha, bit_depth, icc_profile = _to_tensors(path, oriented)
    except (ValueError, OSError) as exc:  # Pillow conversion failures
        raise ImageError(path, f"cannot convert image mode '{mode}' to RGB ({_describe(exc)})") from exc
    return LoadedImage(
        path=path,
        rgb=rgb,
        alpha=alpha,
        icc_profile=icc_profile,
        mode=mode,
        bit_depth=bit_depth,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _read_image_bytes(path: Path) -> bytes:
    """The file's bytes, after checking that it exists, is a file, has an image suffix and is not empty."""
    if not path.exists():
        raise ImageError(path, "no such file or directory")
    if path.is_dir():
        raise ImageError(path, "is a folder, not an image file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        supported = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ImageError(path, f"unsupported file type '{path.suffix or '(none)'}' (supported: {supported})")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "no such file or directory") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    return data


def _open_image(path: Path, data: bytes) -> Image.Image:
    """Identify the format and read the header only (no pixel decoding)."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(path, "not a recognized image file (unknown format or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(path, exc) from None
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise ImageError(path, f"corrupt image header ({_describe(exc)})") from exc


def _bomb_error(path: Path, exc: Exception) -> ImageError:
    """The error for Pillow's own decompression bomb check (its global ``Image.MAX_IMAGE_PIXELS``)."""
    return ImageError(path, f"image is too large, refusing to decode (decompression bomb: {exc})")


def _check_pixel_count(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """Reject empty images and those larger than ``max_pixels`` (decompression bomb guard)."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(path, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            path,
            f"image is too large: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels (possible decompression bomb; raise max_pixels to allow it)",
        )


def _decode_fully(path: Path, image: Image.Image) -> None:
    """Force a full decode so that truncated or corrupt pixel data is detected now."""
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(path, exc) from None
    except Exception as exc:  # OSError, SyntaxError, zlib/struct errors, ...
        raise ImageError(path, f"truncated or corrupt image data ({_describe(exc)})") from exc


def _warn_if_animated(path: Path, image: Image.Image) -> None:
    """Log a warning when only the first of several frames will be used."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        logger.warning("%s: image has %d frames; only the first frame is used", path, frames)


def _exif_transpose(path: Path, image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (returns a new image)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        raise ImageError(path, f"corrupt EXIF metadata ({_describe(exc)})") from exc


def _to_tensors(
    path: Path, image: Image.Image
) -> tuple[torch.Tensor, torch.Tensor | None, int, bytes | None]:
    """Convert a decoded image of any supported mode to ``(rgb, alpha, bit_depth, icc_profile)``."""
    icc_profile = image.info.get("icc_profile") or None
    if image.mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_sixteen_bit_gray(image)), None, 16, _rgb_profile(path, icc_profile)
    if image.mode == "F":
        return _gray_to_rgb(_float_gray(image)), None, 16, _rgb_profile(path, icc_profile)
    if image.mode == "CMYK":
        return _uint8_to_float(_cmyk_to_rgb(path, image, icc_profile)), None, 8, None
    if image.mode in _ALPHA_MODES or _has_transparency(image):
        rgba = _uint8_to_float(image.convert("RGBA"))
        return rgba[:3].contiguous(), rgba[3:].contiguous(), 8, _rgb_profile(path, icc_profile)
    if image.mode in _PLAIN_MODES:
        return _uint8_to_float(image.convert("RGB")), None, 8, _rgb_profile(path, icc_profile)
    raise ImageError(path, f"unsupported image mode '{image.mode}'")


def _has_transparency(image: Image.Image) -> bool:
    """Whether a non-alpha mode carries transparency (tRNS key colour or an RGBA palette)."""
    if "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _uint8_to_float(image: Image.Image) -> torch.Tensor:
    """8-bit RGB(A) image -> float32 ``(C, H, W)`` in ``[0, 1]`` (same arithmetic as :func:`quantize`)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32) / 255.0


def _gray_to_rgb(gray: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` -> ``(3, H, W)`` with three identical channels."""
    return gray.unsqueeze(0).repeat(3, 1, 1)


def _sixteen_bit_gray(image: Image.Image) -> torch.Tensor:
    """16-bit (or 32-bit integer) grayscale scaled by 1/65535 and clamped to ``[0, 1]``."""
    values = np.asarray(image).astype(np.float32)
    return torch.from_numpy(values / np.float32(65535.0)).clamp_(0.0, 1.0)


def _float_gray(image: Image.Image) -> torch.Tensor:
    """Float grayscale: kept as-is when already in ``[0, 1]``, otherwise read as 0..255; NaN becomes 0."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if values.size and values.max() > 1.0:
        values = values / np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(values)).clamp_(0.0, 1.0)


def _cmyk_to_rgb(path: Path, image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """CMYK -> sRGB through the embedded ICC profile when there is one, else Pillow's plain conversion."""
    if icc_profile is None:
        return image.convert("RGB")
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        logger.warning("%s: cannot apply the embedded CMYK profile (%s); using a plain conversion", path, exc)
        return image.convert("RGB")
    assert converted is not None  # profileToProfile returns None only with inPlace=True
    return converted


def _rgb_profile(path: Path, icc_profile: bytes | None) -> bytes | None:
    """Keep an ICC profile only if it describes RGB data (a gray profile cannot tag the RGB output)."""
    if icc_profile is None or icc_profile[16:20] == b"RGB ":
        return icc_profile
    logger.info("%s: dropping the embedded %r ICC profile (output is RGB)", path, icc_profile[16:20])
    return None


def _describe(exc: BaseException) -> str:
    """A short text for an exception, falling back to its type name when the message is empty."""
    return str(exc) or type(exc).__name__


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
