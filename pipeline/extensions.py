"""The file name extensions dagn takes for images (lower case, as ``os.path.splitext`` gives them)."""

from __future__ import annotations

__all__ = ["IMAGE_EXTENSIONS", "JPEG_EXTENSIONS"]

JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")
IMAGE_EXTENSIONS = (*JPEG_EXTENSIONS, ".png", ".webp", ".bmp", ".tif", ".tiff")
