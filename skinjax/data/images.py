"""Reading one image file into an RGB uint8 array of a fixed size.

JPEGs (nearly every dermoscopy collection) go through libjpeg-turbo via simplejpeg,
which also downscales in the DCT when the file is much larger than the target, so that
a 6000x4000 ISIC original costs little more to read than a thumbnail. Other formats
fall back to Pillow; raw pixels in a prepared copy's ArrayRecord file
(`skinjax.data.records`) are read by their record's name. Anything that is not a clean
RGB image raises `ImageError` naming the file and the fix; nothing is silently converted
unless asked.
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from skinjax.data import records

_JPEG_MAGIC = b"\xff\xd8\xff"
_PREPARE_AGAIN = "Prepare the copy again (scripts/prepare_data.py)."


class ImageError(ValueError):
    """An image file that cannot be used as it is."""


def _colour_error(path: str, mode: str) -> ImageError:
    return ImageError(
        f"{path}: image is {mode}, not RGB. Convert the file to RGB, "
        "or set config.data.convert_to_rgb=True to convert it on reading."
    )


def _check_side(path: str, width: int, height: int, min_side: int) -> None:
    if min(width, height) < min_side:
        raise ImageError(
            f"{path}: image is {width}x{height} pixels, smaller than "
            f"config.data.min_image_size={min_side}. Remove the file, or lower the minimum."
        )


def _decode_jpeg(
    data: bytes, path: str, size: int, convert_to_rgb: bool, min_side: int
) -> np.ndarray:
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
        raise ImageError(f"{path}: corrupt JPEG header ({e}). Re-export or remove the file.") from e
    _check_side(path, width, height, min_side)
    if colourspace not in ("YCbCr", "RGB") and not convert_to_rgb:
        raise _colour_error(path, colourspace)
    if colourspace == "CMYK":  # libjpeg-turbo cannot convert CMYK to RGB itself.
        return _decode_other(data, path, size, convert_to_rgb, min_side)
    try:
        # DCT scaling: decode at the smallest power-of-two reduction still >= size.
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=size, min_width=size, strict=True
        )
    except ValueError as e:
        raise ImageError(
            f"{path}: corrupt or truncated JPEG ({e}). Re-export or remove the file."
        ) from e


def _decode_other(
    data: bytes, path: str, size: int, convert_to_rgb: bool, min_side: int
) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_side(path, *image.size, min_side)
            if image.mode != "RGB" and not convert_to_rgb:
                raise _colour_error(path, image.mode)
            image.draft("RGB", (size, size))
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError as e:  # its message names a BytesIO object, not the file
        raise ImageError(f"{path}: not a readable image (unknown format). Remove the file.") from e
    except (OSError, SyntaxError) as e:
        raise ImageError(
            f"{path}: not a readable image ({e}). Re-export or remove the file."
        ) from e


def _decode_raw(data: bytes, path: str, min_side: int) -> np.ndarray:
    try:
        image = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise ImageError(f"{path}: corrupt raw-pixel record ({e}). {_PREPARE_AGAIN}") from e
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(
            f"{path}: raw-pixel record holds {image.dtype} {image.shape}, not HxWx3 uint8. "
            + _PREPARE_AGAIN
        )
    _check_side(path, image.shape[1], image.shape[0], min_side)
    return image


def decode(
    data: bytes,
    path: str,
    *,
    convert_to_rgb: bool = False,
    min_size: int = 0,
    min_side: int = 0,
) -> np.ndarray:
    """Decodes image bytes to HxWx3 uint8; ``min_size`` allows cheap DCT downscaling.

    An image whose smaller side has fewer than ``min_side`` pixels raises `ImageError`.
    """
    if data.startswith(_JPEG_MAGIC):
        return _decode_jpeg(data, path, min_size, convert_to_rgb, min_side)
    if data.startswith(records.NPY_MAGIC):
        return _decode_raw(data, path, min_side)
    return _decode_other(data, path, min_size, convert_to_rgb, min_side)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes to size x size (no aspect-ratio crop: dermoscopy lesions are centred)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, reducing_gap=2.0))


def read_file(path: str) -> bytes:
    """The file's bytes, or the record's when ``path`` names one (`records.ref`)."""
    record = records.parse(path)
    try:
        if record:
            return records.read(*record)
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ImageError(f"{path}: cannot read the file ({e.strerror or e}).") from e
    except (RuntimeError, ValueError) as e:  # riegeli's hash checks; no such record
        raise ImageError(f"{path}: unreadable record ({e}). {_PREPARE_AGAIN}") from e


def load(path: str, size: int, *, convert_to_rgb: bool = False, min_side: int = 0) -> np.ndarray:
    """Reads, decodes and resizes one file to size x size x 3 uint8."""
    data = read_file(path)
    image = decode(data, path, convert_to_rgb=convert_to_rgb, min_size=size, min_side=min_side)
    return resize(image, size)
