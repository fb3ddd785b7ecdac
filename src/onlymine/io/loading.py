"""Decoding one photo: any supported file -> float32 ``(3, H, W)`` in ``[0, 1]`` at full resolution (EXIF orientation
applied, alpha split off), or one clear :class:`ImageError` line."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
# image formats a photo folder may hold that onlymine does not protect: each gets its own line, never silence
UNSUPPORTED_SUFFIXES: frozenset[str] = frozenset({".gif", ".heic", ".heif", ".avif", ".jxl", ".ico", ".svg", ".psd",
                                                  ".raw", ".cr2", ".nef", ".arw", ".dng", ".jp2"})
MAX_PIXELS_DEFAULT = 64_000_000

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


