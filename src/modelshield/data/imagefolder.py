"""Reader for ImageFolder trees: ``root/<class name>/<image file>``, classes in sorted order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from modelshield.errors import DatasetNotFound, FormatError

__all__ = ["IMAGE_SUFFIXES", "read_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def read_image_folder(
    root: str | Path, image_size: int | None = None, grayscale: bool | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read every image under ``root/<class>/`` into (uint8 NCHW, int64 labels, class names).

    Args:
        root: the tree's root folder.
        image_size: square size to resize every image to; default the first image's size (all must match).
        grayscale: force 1 channel (True) or 3 (False); default: 1 if every image is grey, else 3.

    Raises:
        DatasetNotFound: the folder does not exist or holds no class folder with images.
        FormatError: an image cannot be decoded, or sizes differ and no ``image_size`` was given.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFound(f"image folder {root} does not exist (expected {root}/<class>/<image>.png)")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files += [(f, label) for f in sorted((root / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DatasetNotFound(f"no images found under {root} (expected {root}/<class>/<image>.png)")
    images = []
    for path, _ in files:
        try:
            with Image.open(path) as img:
                images.append(img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise FormatError(f"{path}: cannot decode image ({exc})") from None
    if grayscale is None:
        grayscale = all(img.mode == "L" for img in images)
    size = image_size or images[0].size[0]
    arrays = []
    for (path, _), img in zip(files, images):
        img = img.convert("L" if grayscale else "RGB")
        if img.size != (size, size):
            if image_size is None:
                raise FormatError(f"{path}: size {img.size} differs from {(size, size)}; pass an image size to resize")
            img = img.resize((size, size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    labels = np.array([label for _, label in files], dtype=np.int64)
    return np.stack(arrays), labels, classes
