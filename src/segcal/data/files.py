"""Reading images and label masks with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: corrupt or unreadable image ({exc})") from exc
    return img


def read_image(path: str | Path) -> np.ndarray:
    """RGB image as ``uint8 [H, W, 3]`` (grayscale, palette and RGBA images converted)."""
    img = _open(Path(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() or 1.0
        img = Image.fromarray((arr / top * 255).round().astype(np.uint8))
    return np.array(img.convert("RGB"), dtype=np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """Label map as ``int64 [H, W]`` from a single-channel, 16-bit or palette (index) PNG.

    RGB(A) masks are accepted only when all colour channels are equal (grey saved as RGB).
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("RGB", "RGBA", "LA"):
        arr = np.asarray(img)
        chans = arr[..., :3] if img.mode != "LA" else arr[..., :1]
        if (chans == chans[..., :1]).all():
            return chans[..., 0].astype(np.int64)
    raise ValueError(f"{path}: mask has image mode {img.mode}; expected a single-channel label image "
                     "(8/16-bit grey or palette PNG) whose pixel values are class indices")


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write ``uint8 [H, W, 3]`` images or integer ``[H, W]`` label maps (8-bit, or 16-bit when > 255)."""
    arr = np.asarray(array)
    if arr.ndim == 2 and arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"{path}: label values must be in 0..65535, got {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint8) if arr.max() <= 255 else arr.astype(np.uint16)
    Image.fromarray(arr).save(path)


def find_images(folder: Path, exts: tuple[str, ...] = IMAGE_EXTS) -> dict[str, Path]:
    """Files in ``folder`` (top level, hidden ones skipped, any-case extensions in ``exts``) by stem."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts:
            if p.stem in found:
                raise ValueError(f"{folder}: two files share the stem {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    return found
