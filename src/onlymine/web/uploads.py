"""Checking uploaded files: names, sizes, pixel counts and the real file type, detected from the content.

An upload's name is only ever a *display* name: it is checked (no path parts, no control characters) and then
used for nothing but labels and download names. The stored file gets a server-generated name with the suffix
of the type Pillow detects in the bytes; a PNG called ``photo.jpg`` is accepted as the PNG it is.
"""

from __future__ import annotations

import io as _io
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from onlymine import io

# Pillow format -> stored suffix. Only these decoders are ever tried (no EPS/PDF/exotic plugins).
ALLOWED_FORMATS: dict[str, str] = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
MAX_NAME_CHARS = 120


class UploadRejected(Exception):
    """A request the server refuses: ``status`` is the HTTP code, the message says why in one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class StoredUpload:
    """One accepted file: its checked display name and where the server stored it."""

    name: str
    path: Path
    fmt: str
    size_bytes: int
    width: int
    height: int
    sha256: str


def display_name(raw: str | None, index: int) -> str:
    """Check a client-supplied file name and return it as a display name.

    Raises:
        UploadRejected(400): the name has path parts (``/``, ``\\``, ``..``), control characters, or is too long.
    """
    if not raw:
        return f"image-{index + 1}"
    name = unicodedata.normalize("NFC", raw)
    if "/" in name or "\\" in name or name in (".", ".."):  # without a separator, "....png" is just a name
        raise UploadRejected(400, f"file name {raw!r} contains a path; send a plain file name")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise UploadRejected(400, f"file name {raw!r} contains control characters")
    if len(name) > MAX_NAME_CHARS:
        raise UploadRejected(400, f"file name {name[:40]!r}... is longer than {MAX_NAME_CHARS} characters")
    return name


def download_name(name: str, suffix: str = ".png", tag: str = "-protected") -> str:
    """An ASCII-safe file name for Content-Disposition and zip entries: ``<stem>-protected.png``."""
    stem = Path(name).stem if "." in name else name
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_stem).strip("._") or "image"
    return f"{safe[:80]}{tag}{suffix}"


def detect_format(data: bytes, name: str, max_pixels: int) -> tuple[str, int, int]:
    """The Pillow format and size of ``data``, read from the header only (no pixel decoding).

    Raises:
        UploadRejected: 415 when the content is not one of :data:`ALLOWED_FORMATS` (whatever its extension),
            413 when the header announces more than ``max_pixels`` pixels.
    """
    if not data:
        raise UploadRejected(400, f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(_io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as im:
                fmt, (width, height) = str(im.format), im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadRejected(413, f"{name}: image has too many pixels (decompression bomb: {e}); this server "
                                  f"accepts at most {max_pixels:,}") from None
    except UnidentifiedImageError:
        kinds = ", ".join(ALLOWED_FORMATS)
        raise UploadRejected(415, f"{name}: not a supported image (content checked, not the extension; "
                                  f"accepted: {kinds})") from None
    except Exception as e:  # malformed headers raise many types
        raise UploadRejected(422, f"{name}: corrupt image header ({e or type(e).__name__})") from None
    if width * height > max_pixels:
        raise UploadRejected(413, f"{name}: image is {width}x{height} = {width * height:,} pixels; "
                                  f"this server accepts at most {max_pixels:,}")
    return fmt, width, height


def store_upload(data: bytes, raw_name: str | None, index: int, folder: Path, max_bytes: int,
                 max_pixels: int) -> StoredUpload:
    """Check one upload, store it under a server-generated name in ``folder`` and decode it fully once.

    The full decode goes through :func:`onlymine.io.load_image` (the one loading path), so truncated or corrupt
    pixel data is refused now with a 422 rather than failing later in the job.
    """
    name = display_name(raw_name, index)
    if len(data) > max_bytes:
        raise UploadRejected(413, f"{name}: file is {len(data):,} bytes; this server accepts at most "
                                  f"{max_bytes:,} bytes per file")
    fmt, width, height = detect_format(data, name, max_pixels)
    path = folder / f"{index:03d}{ALLOWED_FORMATS[fmt]}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as handle:
        handle.write(data)
    try:
        loaded = io.load_image(path, max_pixels=max_pixels)
    except io.ImageError as e:
        path.unlink(missing_ok=True)
        raise UploadRejected(422, f"{name}: {e.problem}") from None
    return StoredUpload(name=name, path=path, fmt=fmt, size_bytes=len(data), width=width, height=height,
                        sha256=loaded.sha256)
