"""Tests for onlymine.io: loading every odd input, exact 8-bit round trips, safe saving, JSONL."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import ExifTags, Image, ImageCms, ImageFile, JpegImagePlugin

from onlymine.io import (
    IMAGE_SUFFIXES,
    MAX_PIXELS_DEFAULT,
    ImageError,
    LoadedImage,
    append_jsonl,
    find_images,
    load_image,
    output_path,
    quantize,
    read_jsonl,
    save_image,
    sha256_file,
    to_uint8,
    write_text_atomic,
)

KIT = Path(__file__).resolve().parents[2] / "shared" / "kit" / "photos"
SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def kit_photo(relative: str) -> Path:
    """A photo from the shared kit, or skip the test when the kit is not available."""
    path = KIT / relative
    if not path.is_file():
        pytest.skip(f"kit photo {path} not available")
    return path


def noise_image(width: int = 64, height: int = 48, channels: int = 3, seed: int = 0) -> Image.Image:
    """A random uint8 image (random data compresses badly, so cutting a file lands inside pixel data)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    """The bytes of ``image`` saved in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` and return it."""
    path.write_bytes(data)
    return path


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid 1x1 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed up)."""
    data = bytearray(encoded(Image.new("1", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def expected_float(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) float32 / 255, computed independently of the module."""
    return torch.from_numpy(array.astype(np.float32) / np.float32(255)).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------------ bad inputs


def _empty(tmp: Path) -> tuple[Path, dict]:
    return write(tmp / "empty.png", b""), {}


def _text_as_jpeg(tmp: Path) -> tuple[Path, dict]:
    return write(tmp / "notes.jpg", b"this is not a picture\n" * 10), {}


def _truncated_jpeg(tmp: Path) -> tuple[Path, dict]:
    source = KIT / "imagenet" / "aib_000.jpg"
    data = source.read_bytes() if source.is_file() else encoded(noise_image(256, 256), "JPEG", quality=95)
    return write(tmp / "half.jpg", data[: len(data) // 2]), {}


def _truncated_png(tmp: Path) -> tuple[Path, dict]:
    data = encoded(noise_image(), "PNG")
    return write(tmp / "half.png", data[: len(data) // 2]), {}


def _corrupt_middle_png(tmp: Path) -> tuple[Path, dict]:
    data = bytearray(encoded(noise_image(), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    return write(tmp / "corrupt.png", bytes(data)), {}


def _bomb_pillow_error(tmp: Path) -> tuple[Path, dict]:
    return write(tmp / "bomb_pillow.png", png_with_header_size(20_000, 20_000)), {}


def _bomb_pillow_warning(tmp: Path) -> tuple[Path, dict]:
    # 100 M pixels: above Pillow's warning threshold (~89 M) but below our (raised) limit.
    return write(tmp / "bomb_warning.png", png_with_header_size(10_000, 10_000)), {"max_pixels": 10**9}


def _bomb_our_limit(tmp: Path) -> tuple[Path, dict]:
    # 81 M pixels: Pillow is silent, our default limit (64 M) must refuse it before decoding the
    # (missing) pixel data, which would otherwise be reported as "truncated".
    return write(tmp / "bomb_ours.png", png_with_header_size(9_000, 9_000)), {}


def _bomb_small_limit(tmp: Path) -> tuple[Path, dict]:
    return write(tmp / "bilevel.png", encoded(Image.new("1", (300, 300)), "PNG")), {"max_pixels": 10_000}


def _unknown_suffix(tmp: Path) -> tuple[Path, dict]:
    return write(tmp / "picture.gif", encoded(noise_image(), "GIF")), {}


def _missing(tmp: Path) -> tuple[Path, dict]:
    return tmp / "missing.jpg", {}


def _folder(tmp: Path) -> tuple[Path, dict]:
    folder = tmp / "album.png"
    folder.mkdir()
    return folder, {}


def _unsupported_mode(tmp: Path) -> tuple[Path, dict]:
    return write(tmp / "lab.tif", encoded(Image.new("LAB", (4, 4)), "TIFF")), {}


BAD_INPUTS: dict[str, tuple[Callable[[Path], tuple[Path, dict]], str]] = {
    "empty": (_empty, "empty file"),
    "text named .jpg": (_text_as_jpeg, "not a recognized image"),
    "truncated jpeg": (_truncated_jpeg, "truncated or corrupt"),
    "truncated png": (_truncated_png, "truncated or corrupt"),
    "corrupt middle png": (_corrupt_middle_png, "truncated or corrupt"),
    "bomb (Pillow error)": (_bomb_pillow_error, "too large"),
    "bomb (Pillow warning)": (_bomb_pillow_warning, "too large"),
    "bomb (our default limit)": (_bomb_our_limit, "exceeds the limit of 64,000,000 pixels"),
    "bomb (small max_pixels)": (_bomb_small_limit, "exceeds the limit of 10,000 pixels"),
    "unsupported suffix": (_unknown_suffix, "unsupported file type '.gif'"),
    "missing": (_missing, "no such file or directory"),
    "folder": (_folder, "is a folder"),
    "unsupported mode": (_unsupported_mode, "unsupported image mode 'LAB'"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_image_error_naming_the_file(tmp_path: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    path, kwargs = make(tmp_path)
    with pytest.raises(ImageError) as caught:
        load_image(path, **kwargs)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert path.name in message and expected in message
    assert "\n" not in message
    assert caught.value.path == path


def test_pillow_truncated_loading_stays_disabled() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_image_error_pickles_for_worker_processes() -> None:
    error = pickle.loads(pickle.dumps(ImageError(Path("bad.jpg"), "empty file (0 bytes)")))
    assert str(error) == "bad.jpg: empty file (0 bytes)"
    assert error.path == Path("bad.jpg")


def test_default_limit_value() -> None:
    assert MAX_PIXELS_DEFAULT == 64_000_000
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"} == IMAGE_SUFFIXES


# ----------------------------------------------------------------------------------------------------- modes


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (4, 1))
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.putdata([0, 1, 1, 0])
    return image


def _palette_alpha() -> Image.Image:
    image = Image.new("PA", (4, 1))
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.putdata([(0, 255), (1, 0), (1, 128), (0, 255)])
    return image


RED_GREEN = np.array([[[255, 0, 0], [0, 255, 0], [0, 255, 0], [255, 0, 0]]], np.uint8)
GRAY = np.array([[0, 64, 128, 255]], np.uint8)
GRAY3 = np.repeat(GRAY[..., None], 3, axis=2)
RGBA = np.random.default_rng(1).integers(0, 256, (3, 5, 4), dtype=np.uint8)
SIXTEEN = np.array([[0, 1000, 32768, 65535]], np.uint16)

# mode -> (file name, file bytes, expected rgb (C,H,W), expected alpha (1,H,W) or None, bit depth)
MODE_CASES: dict[str, tuple[str, bytes, torch.Tensor, torch.Tensor | None, int]] = {
    "1": (
        "bilevel.png",
        encoded(Image.fromarray(np.array([[False, True, True, False]])), "PNG"),
        expected_float(np.repeat(np.array([[0, 255, 255, 0]], np.uint8)[..., None], 3, axis=2)),
        None,
        8,
    ),
    "L": ("gray.png", encoded(Image.fromarray(GRAY), "PNG"), expected_float(GRAY3), None, 8),
    "LA": (
        "gray_alpha.png",
        encoded(Image.fromarray(np.dstack([GRAY, GRAY[:, ::-1]])), "PNG"),
        expected_float(GRAY3),
        expected_float(GRAY[:, ::-1, None]),
        8,
    ),
    "P": (
        "palette.png",
        encoded(_palette_with_transparency(), "PNG", transparency=1),
        expected_float(RED_GREEN),
        expected_float(np.array([[[255], [0], [0], [255]]], np.uint8)),
        8,
    ),
    "PA": (
        "palette_alpha.tif",
        encoded(_palette_alpha(), "TIFF"),
        expected_float(RED_GREEN),
        expected_float(np.array([[[255], [0], [128], [255]]], np.uint8)),
        8,
    ),
    "RGBA": (
        "rgba.png",
        encoded(Image.fromarray(RGBA), "PNG"),
        expected_float(RGBA[..., :3]),
        expected_float(RGBA[..., 3:]),
        8,
    ),
    "CMYK": (
        "cmyk.tif",
        encoded(Image.new("CMYK", (4, 1), (0, 255, 255, 0)), "TIFF"),
        expected_float(np.repeat(np.array([[[255, 0, 0]]], np.uint8), 4, axis=1)),
        None,
        8,
    ),
    "YCbCr": (
        "ycbcr.tif",
        encoded(Image.new("YCbCr", (4, 1), (128, 128, 128)), "TIFF"),
        expected_float(np.full((1, 4, 3), 128, np.uint8)),
        None,
        8,
    ),
    "I;16": (
        "sixteen.png",
        encoded(Image.fromarray(SIXTEEN), "PNG"),
        torch.from_numpy(SIXTEEN.astype(np.float32) / np.float32(65535)).expand(3, -1, -1),
        None,
        16,
    ),
    "I;16B": (
        "sixteen_be.tif",
        encoded(Image.fromarray(SIXTEEN.astype(">u2")), "TIFF"),
        torch.from_numpy(SIXTEEN.astype(np.float32) / np.float32(65535)).expand(3, -1, -1),
        None,
        16,
    ),
    "I": (
        "int32.tif",
        encoded(Image.fromarray(np.array([[-5, 0, 32768, 70000]], np.int32)), "TIFF"),
        torch.tensor([[0.0, 0.0, 32768 / 65535, 1.0]]).expand(3, -1, -1),
        None,
        16,
    ),
    "F": (
        "float.tif",
        encoded(Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)), "TIFF"),
        torch.tensor([[0.0, 0.25, 0.5, 1.0]]).expand(3, -1, -1),
        None,
        16,
    ),
}


@pytest.mark.parametrize("mode", MODE_CASES)
def test_modes_become_rgb_with_alpha_split_off(tmp_path: Path, mode: str) -> None:
    name, data, rgb, alpha, bit_depth = MODE_CASES[mode]
    loaded = load_image(write(tmp_path / name, data))
    assert loaded.mode == mode
    assert loaded.bit_depth == bit_depth
    assert loaded.rgb.dtype == torch.float32 and loaded.rgb.shape == rgb.shape
    torch.testing.assert_close(loaded.rgb, rgb, rtol=0, atol=1e-6)
    if alpha is None:
        assert loaded.alpha is None
    else:
        assert loaded.alpha is not None and loaded.alpha.dtype == torch.float32
        torch.testing.assert_close(loaded.alpha, alpha, rtol=0, atol=1e-6)


def test_float_image_in_0_255_range_is_rescaled(tmp_path: Path) -> None:
    data = encoded(Image.fromarray(np.array([[0.0, 51.0, 255.0]], np.float32)), "TIFF")
    loaded = load_image(write(tmp_path / "float255.tif", data))
    torch.testing.assert_close(loaded.rgb[0, 0], torch.tensor([0.0, 0.2, 1.0]))


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    path = write(tmp_path / "cmyk.jpg", encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"))
    loaded = load_image(path)
    assert loaded.mode == "CMYK" and loaded.rgb.shape == (3, 16, 16)
    torch.testing.assert_close(
        loaded.rgb.mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), rtol=0, atol=3 / 255
    )
    assert loaded.icc_profile is None


def test_cmyk_with_profile_goes_through_color_management(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_profile_to_profile(image: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        calls.append(f"{image.mode}->{kwargs.get('outputMode')}")
        return Image.new("RGB", image.size, (10, 20, 30))

    monkeypatch.setattr("onlymine.io.loading.ImageCms.profileToProfile", fake_profile_to_profile)
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    loaded = load_image(write(tmp_path / "cmyk_icc.jpg", encoded(image, "JPEG", icc_profile=SRGB_PROFILE)))
    assert calls == ["CMYK->RGB"]
    torch.testing.assert_close(loaded.rgb[:, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    assert loaded.icc_profile is None  # pixels are now sRGB; the CMYK profile no longer applies


def test_cmyk_with_unusable_profile_falls_back_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An RGB profile on CMYK data cannot build a transform.
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    path = write(tmp_path / "cmyk_bad_icc.tif", encoded(image, "TIFF", icc_profile=SRGB_PROFILE))
    with caplog.at_level(logging.WARNING, logger="onlymine.io"):
        loaded = load_image(path)
    torch.testing.assert_close(loaded.rgb[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert "cmyk_bad_icc.tif" in caplog.text and "plain conversion" in caplog.text


def test_sixteen_bit_png_keeps_precision(tmp_path: Path) -> None:
    ramp = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16) + np.uint16(1)
    loaded = load_image(write(tmp_path / "ramp16.png", encoded(Image.fromarray(ramp), "PNG")))
    assert loaded.bit_depth == 16
    values = loaded.rgb[0].numpy()
    np.testing.assert_array_equal(np.round(values * 65535).astype(np.int64), ramp.astype(np.int64))
    assert len(np.unique(values)) == 256 and not np.allclose(values * 255, np.round(values * 255))


def test_non_rgb_icc_profile_is_dropped(tmp_path: Path) -> None:
    gray_profile = SRGB_PROFILE[:16] + b"GRAY" + SRGB_PROFILE[20:]
    path = write(tmp_path / "gray_icc.png", encoded(Image.fromarray(GRAY), "PNG", icc_profile=gray_profile))
    assert load_image(path).icc_profile is None


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    pixels = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10  # H=2, W=4, all pixels distinct
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[ExifTags.Base.Orientation] = 6
    path = write(tmp_path / "rotated.png", encoded(image, "PNG", exif=exif, icc_profile=SRGB_PROFILE))
    loaded = load_image(path)
    assert loaded.size == (4, 2) and loaded.rgb.shape == (3, 4, 2)
    torch.testing.assert_close(loaded.rgb, expected_float(np.rot90(pixels, k=-1).copy()), rtol=0, atol=0)
    assert loaded.icc_profile == SRGB_PROFILE


def test_animated_image_uses_first_frame_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = [Image.new("RGB", (4, 4), color) for color in ("red", "blue")]
    path = write(tmp_path / "anim.png", encoded(frames[0], "PNG", save_all=True, append_images=frames[1:]))
    with caplog.at_level(logging.WARNING, logger="onlymine.io"):
        loaded = load_image(path)
    torch.testing.assert_close(loaded.rgb[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert "anim.png" in caplog.text and "2 frames" in caplog.text


def test_sha256_matches_file_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "x.png", encoded(noise_image(), "PNG"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == digest
    assert load_image(path).sha256 == digest


# ------------------------------------------------------------------------------------------------- kit photos


@pytest.mark.kit
@pytest.mark.parametrize("name", ["detection/skimage_camera.png", "faces/pyfeat_bw_soldier.jpg"])
def test_kit_grayscale_photos_have_three_equal_channels(name: str) -> None:
    loaded = load_image(kit_photo(name))
    assert loaded.mode == "L" and loaded.alpha is None
    assert torch.equal(loaded.rgb[0], loaded.rgb[1]) and torch.equal(loaded.rgb[1], loaded.rgb[2])


@pytest.mark.kit
def test_kit_rgba_photo_round_trips_exactly(tmp_path: Path) -> None:
    loaded = load_image(kit_photo("faces/pyfeat_laughing_man.png"))
    assert loaded.mode == "RGBA" and loaded.alpha is not None
    assert loaded.alpha.shape == (1, *loaded.size)
    again = load_image(save_image(tmp_path / "man.png", loaded.rgb, loaded.alpha))
    assert torch.equal(again.rgb, loaded.rgb)
    assert again.alpha is not None and torch.equal(again.alpha, loaded.alpha)


@pytest.mark.kit
def test_kit_photo_loads_at_full_resolution() -> None:
    path = kit_photo("imagenet/foolbox_00_243.jpg")
    loaded = load_image(path)
    with Image.open(path) as raw:
        width, height = raw.size
    assert loaded.size == (height, width) and loaded.path == path
    assert loaded.rgb.dtype == torch.float32 and loaded.rgb.min() >= 0.0 and loaded.rgb.max() <= 1.0
    assert loaded.sha256 == sha256_file(path)


# ---------------------------------------------------------------------------------------------- quantization


def test_to_uint8_rounds_half_up_and_clamps() -> None:
    rgb = (
        torch.tensor([-0.3, 0.0, 0.5, 1.4 / 255, 1.6 / 255, 1.0, 1.7, float("nan")])
        .reshape(1, 1, 8)
        .expand(3, 1, 8)
    )
    out = to_uint8(rgb)
    assert out.shape == (1, 8, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 0, 128, 1, 2, 255, 255, 0]


def test_to_uint8_rounds_exact_halves_up() -> None:
    levels = torch.arange(255, dtype=torch.float32)
    halves = ((levels + 0.5) / 255).reshape(1, 1, 255).expand(3, 1, 255)
    assert torch.equal(halves[0, 0] * 255, levels + 0.5)  # the products really are exact halves
    np.testing.assert_array_equal(to_uint8(halves)[0, :, 0], np.arange(1, 256))


def test_to_uint8_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_uint8(torch.zeros(4, 2, 2))


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.just(3), st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(0, 1, width=32),
    )
)
def test_quantize_is_idempotent_and_close(values: np.ndarray) -> None:
    x = torch.from_numpy(values)
    q = quantize(x)
    assert q.dtype == torch.float32 and q.shape == x.shape
    assert torch.equal(quantize(q), q)
    assert (q - x).abs().max().item() <= 0.5 / 255 + 1e-6
    assert torch.equal(q, torch.from_numpy(to_uint8(x)).permute(2, 0, 1).float() / 255)


def test_quantize_predicts_saved_png_bit_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.random((3, 37, 53), dtype=np.float32) * 1.2 - 0.1)
    x[0, 0, :5] = torch.tensor([0.5, 0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0])
    path = save_image(tmp_path / "q.png", x)
    with Image.open(path) as saved:
        np.testing.assert_array_equal(np.asarray(saved), to_uint8(x))
    assert torch.equal(load_image(path).rgb, quantize(x))


@pytest.mark.kit
def test_perturbed_kit_photo_round_trips_bit_exactly(tmp_path: Path) -> None:
    loaded = load_image(kit_photo("imagenet/aib_000.jpg"))
    delta = (torch.rand_like(loaded.rgb, generator=torch.Generator().manual_seed(0)) - 0.5) * (16 / 255)
    x = (loaded.rgb + delta).clamp(0, 1)
    assert torch.equal(load_image(save_image(tmp_path / "p.png", x)).rgb, quantize(x))


# ---------------------------------------------------------------------------------------------------- saving


def _noise_tensor(height: int = 12, width: int = 10) -> torch.Tensor:
    return expected_float(np.asarray(noise_image(width, height)))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff"])
def test_icc_profile_is_kept_on_save(tmp_path: Path, fmt: str) -> None:
    path = save_image(tmp_path / f"icc.{fmt}", _noise_tensor(), fmt=fmt, icc_profile=SRGB_PROFILE)
    assert load_image(path).icc_profile == SRGB_PROFILE


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff"])
def test_exif_and_gps_are_stripped_on_save(tmp_path: Path, fmt: str) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(
        {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 29.0)}
    )
    source = write(tmp_path / "gps.jpg", encoded(noise_image(), "JPEG", exif=exif))
    with Image.open(source) as raw:
        assert raw.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the fixture really carries GPS
    loaded = load_image(source)
    path = save_image(tmp_path / f"out.{fmt}", loaded.rgb, fmt=fmt, icc_profile=loaded.icc_profile)
    with Image.open(path) as saved:
        exif = saved.getexif()  # for TIFF this also lists the image structure tags, which are fine
        assert (
            ExifTags.Base.Make not in exif and ExifTags.IFD.GPSInfo not in exif and "exif" not in saved.info
        )
    data = path.read_bytes()
    assert b"SpyCam" not in data and b"Exif\x00\x00" not in data


@pytest.mark.parametrize("fmt", ["png", "webp", "tiff"])
def test_alpha_round_trips_exactly(tmp_path: Path, fmt: str) -> None:
    rgba = expected_float(np.asarray(noise_image(channels=4)))
    path = save_image(tmp_path / f"a.{fmt}", rgba[:3], rgba[3:], fmt=fmt, quality=100)
    loaded = load_image(path)
    assert loaded.alpha is not None
    assert torch.equal(loaded.alpha, rgba[3:]) and torch.equal(loaded.rgb, rgba[:3])


def test_jpeg_drops_alpha_with_warning_and_uses_444(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="onlymine.io"):
        path = save_image(tmp_path / "x.jpg", _noise_tensor(), torch.ones(1, 12, 10), fmt="jpeg", quality=90)
    assert "x.jpg" in caplog.text and "alpha" in caplog.text
    with Image.open(path) as saved:
        assert saved.format == "JPEG" and saved.mode == "RGB"
        assert JpegImagePlugin.get_sampling(saved) == 0


def test_lossy_webp_below_quality_100(tmp_path: Path) -> None:
    x = _noise_tensor(64, 64)
    lossy = load_image(save_image(tmp_path / "lossy.webp", x, fmt="webp", quality=80)).rgb
    lossless = load_image(save_image(tmp_path / "lossless.webp", x, fmt="webp", quality=100)).rgb
    assert torch.equal(lossless, x) and not torch.equal(lossy, x)


def test_save_never_overwrites_unless_asked(tmp_path: Path) -> None:
    path = save_image(tmp_path / "x.png", _noise_tensor())
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="x.png"):
        save_image(path, torch.zeros(3, 12, 10))
    assert path.read_bytes() == before
    save_image(path, torch.zeros(3, 12, 10), overwrite=True)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_save_leaves_no_temp_files_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er"
    for fmt in ("png", "jpeg", "webp", "tiff"):
        save_image(
            output_path(Path("in.png"), None, target, fmt).with_stem(f"img_{fmt}"), _noise_tensor(), fmt=fmt
        )
    write_text_atomic(target / "report.txt", "ok")
    names = sorted(p.name for p in target.iterdir())
    assert names == ["img_jpeg.jpg", "img_png.png", "img_tiff.tif", "img_webp.webp", "report.txt"]


def test_failed_save_removes_temp_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = write(tmp_path / "x.png", b"old bytes")

    def broken_save(self: Image.Image, fp: io.BufferedWriter, *args: object, **kwargs: object) -> None:
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(old, _noise_tensor(), overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        save_image(tmp_path / "new.png", _noise_tensor())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
    assert old.read_bytes() == b"old bytes"


def test_saved_file_permissions_follow_umask(tmp_path: Path) -> None:
    if os.name != "posix":
        pytest.skip("POSIX permissions only")
    umask = os.umask(0o022)
    try:
        path = save_image(tmp_path / "x.png", _noise_tensor())
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_rejects_bad_format_and_alpha_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gif"):
        save_image(tmp_path / "x.gif", _noise_tensor(), fmt="gif")
    with pytest.raises(ValueError, match="alpha"):
        save_image(tmp_path / "x.png", _noise_tensor(), torch.ones(1, 3, 3))
    assert list(tmp_path.iterdir()) == []


def test_output_path_mirrors_subfolders(tmp_path: Path) -> None:
    root, out = tmp_path / "photos", tmp_path / "out"
    photo = root / "trip" / "day1" / "beach.JPEG"
    assert output_path(photo, root, out, "png") == out / "trip" / "day1" / "beach.png"
    assert output_path(photo, None, out, "jpeg") == out / "beach.jpg"
    assert output_path(photo, root, out, "tiff") == out / "trip" / "day1" / "beach.tif"
    assert output_path(photo, root, out, "webp") == out / "trip" / "day1" / "beach.webp"
    with pytest.raises(ValueError):
        output_path(photo, root, out, "gif")


# --------------------------------------------------------------------------------------------------- finding


def test_find_images_recursion_order_and_exclusion(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for name in [
        "b.jpg",
        "a.PNG",
        "notes.txt",
        ".hidden.jpg",
        "sub/d.webp",
        "sub/c.TIFF",
        "sub/z/e.bmp",
        ".git/x.png",
        "protected/old.png",
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    explicit = root / "notes.txt"
    paths, errors = find_images(
        [root, explicit, root / "b.jpg", tmp_path / "gone.jpg"], exclude=root / "protected"
    )
    assert paths == [
        root / "a.PNG",
        root / "b.jpg",
        root / "sub" / "c.TIFF",
        root / "sub" / "d.webp",
        root / "sub" / "z" / "e.bmp",
        explicit,
    ]
    assert [str(e) for e in errors] == [f"{tmp_path / 'gone.jpg'}: no such file or directory"]
    assert find_images([root], exclude=root) == ([], [])


def test_find_images_is_deterministic(tmp_path: Path) -> None:
    names = [f"{i:02d}.jpg" for i in range(30)]
    for name in reversed(names):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images([tmp_path])[0]] == names
    assert find_images([tmp_path]) == find_images([str(tmp_path)])


# ------------------------------------------------------------------------------------------------ text/jsonl


def test_write_text_atomic_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.json"
    write_text_atomic(path, "one")
    write_text_atomic(path, "twö")
    assert path.read_text(encoding="utf-8") == "twö"
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_jsonl_append_and_read(tmp_path: Path) -> None:
    path = tmp_path / "log" / "runs.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, {"file": Path("a.jpg"), "ok": True})
    append_jsonl(path, {"file": "b.jpg", "score": 0.5})
    assert read_jsonl(path) == [{"file": "a.jpg", "ok": True}, {"file": "b.jpg", "score": 0.5}]
    assert path.read_text().count("\n") == 2


def test_jsonl_survives_a_half_written_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "runs.jsonl"
    append_jsonl(path, {"n": 1})
    with open(path, "ab") as handle:
        handle.write(b'{"n": 2, "fi')  # crash in the middle of a write
    with caplog.at_level(logging.WARNING, logger="onlymine.io"):
        assert read_jsonl(path) == [{"n": 1}]
    assert "runs.jsonl:2" in caplog.text
    append_jsonl(path, {"n": 3})
    assert read_jsonl(path) == [{"n": 1}, {"n": 3}]


def test_loaded_image_size_property() -> None:
    image = LoadedImage(Path("x.png"), torch.zeros(3, 5, 7), None, None, "RGB", 8, "0" * 64)
    assert image.size == (5, 7)
