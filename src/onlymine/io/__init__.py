"""Image and file input/output for onlymine.

Loading turns any supported photo into a float32 ``(3, H, W)`` tensor in ``[0, 1]`` at full resolution
(EXIF orientation applied, alpha split off), with clear one-line :class:`ImageError` messages for bad
inputs. Saving is atomic, never overwrites by accident and writes no metadata except the ICC profile.
:func:`quantize` predicts exactly what an 8-bit save followed by :func:`load_image` gives back.

The package: :mod:`~onlymine.io.finding` (inputs -> photo paths), :mod:`~onlymine.io.loading` (decoding),
:mod:`~onlymine.io.files` (quantization, atomic saves, JSONL).
"""

from onlymine.io.files import (
    _atomic_writer,
    append_jsonl,
    open_rgb,
    output_path,
    quantize,
    read_jsonl,
    save_image,
    to_pil,
    to_uint8,
    write_text_atomic,
)
from onlymine.io.finding import find_images
from onlymine.io.loading import (
    IMAGE_SUFFIXES,
    MAX_PIXELS_DEFAULT,
    UNSUPPORTED_SUFFIXES,
    ImageError,
    LoadedImage,
    load_image,
    sha256_file,
)

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS_DEFAULT", "UNSUPPORTED_SUFFIXES", "ImageError", "LoadedImage",
           "_atomic_writer", "append_jsonl", "find_images", "load_image", "open_rgb", "output_path", "quantize",
           "read_jsonl", "save_image", "sha256_file", "to_pil", "to_uint8", "write_text_atomic"]
