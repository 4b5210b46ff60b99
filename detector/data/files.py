"""Reading dataset files: the DatasetError that names a file, image headers, and image pixels as displayed.

An image whose EXIF orientation tag (2..8) flips or rotates it is read with that orientation applied, as
viewers, labelling tools and ultralytics show it (orientations 5..8 swap width and height); labels, COCO/VOC
``width``/``height``, the evaluation ground truth and ``tools/check_data.py`` all describe that view. Pixels
are decoded once (OpenCV, its own EXIF handling off); the tag, read by PIL from the same bytes (header only),
is applied with a transpose / flip. A truncated JPEG is an error naming the file, not a grey image.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from detector.errors import DatasetError


def dataset_error(file: str, message: str, line: int | None = None) -> DatasetError:
    """A :class:`DatasetError` whose message starts with ``file:line:`` (or ``file:``).

    The location is also kept as attributes ``file`` and ``line`` for callers that want it.
    """
    where = f"{file}:{line}" if line is not None else f"{file}"
    err = DatasetError(f"{where}: {message}")
    err.file, err.line = file, line
    return err


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
EXIF_ORIENTATION = 0x0112
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that transpose the image (displayed width = stored height)."""
_ORIENT = {  # EXIF orientation -> stored pixels (H, W, 3) to the displayed view, as PIL's ImageOps.exif_transpose
    2: lambda im: cv2.flip(im, 1),                                  # mirrored left-right
    3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
    4: lambda im: cv2.flip(im, 0),                                  # mirrored top-bottom
    5: lambda im: cv2.transpose(im),                                # mirrored along the main diagonal
    6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    7: lambda im: cv2.rotate(cv2.transpose(im), cv2.ROTATE_180),    # mirrored along the anti-diagonal
    8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _decode_fails(path: str) -> str | None:
    """PIL's full decode of ``path``: None if it decodes, else its error text (e.g. 'image file is truncated')."""
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, SyntaxError) as e:
        return str(e) or type(e).__name__
    return None


def truncation_error(path: str, head: bytes, tail: bytes) -> str | None:
    """Why a JPEG whose first and last two bytes are ``head``/``tail`` is truncated, else None.

    A JPEG ends with the EOI marker ``FF D9``; a file that starts like a JPEG but does not end with it is
    decoded in full once (some cameras append data after EOI) and reported only if that decode fails.
    """
    if head != JPEG_START or tail == JPEG_END:
        return None
    reason = _decode_fails(path)
    return None if reason is None else f"truncated JPEG (no end marker; {reason}); re-export or remove it"


def exif_orientation(im: Image.Image) -> int:
    """EXIF orientation of an opened (not decoded) PIL image: 1..8, 1 when absent or out of range.

    A PNG's ``eXIf`` chunk is read only when it precedes the pixels, as PIL writes it (PIL would decode the whole
    image to find a later one).
    """
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except (TypeError, ValueError, OSError, SyntaxError):  # a malformed EXIF block: treat the image as upright
        return 1
    return value if 1 <= value <= 8 else 1


def displayed_size(height: int, width: int, orientation: int) -> tuple[int, int]:
    """``(height, width)`` of an image stored as ``height x width`` once its EXIF ``orientation`` is applied."""
    return (width, height) if orientation in SWAPPING_ORIENTATIONS else (height, width)


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """image (ndarray[H, W, C]) as stored -> the displayed view (ndarray[H, W, C] or [W, H, C] for 5..8, contiguous)."""
    transform = _ORIENT.get(orientation)
    return image if transform is None else transform(image)


def size_mismatch(path: str, shape: tuple[int, int], orientation: int, stated: tuple[int, int],
                  source: str = "") -> DatasetError:
    """The DatasetError for an image displayed as ``shape`` ``(h, w)`` whose annotations (file ``source``, if given)
    state ``stated`` ``(h, w)``. When they state the stored size of an image whose EXIF orientation swaps it, says so
    and how to fix it."""
    (h, w), (sh, sw) = shape, stated
    source = f" ({source})" if source else ""
    text = f"image is {w}x{h} (w x h) but the annotations{source} say {sw}x{sh}"
    if orientation in SWAPPING_ORIENTATIONS and (sh, sw) == (w, h):
        text = (f"image is displayed {w}x{h} (w x h; stored {h}x{w} with EXIF orientation {orientation}, which "
                f"rotates it) but the annotations{source} say {sw}x{sh}: they describe the unrotated pixels. "
                f"Images and boxes are read as displayed (as labelling tools and ultralytics show them); re-export "
                f"the annotations from the displayed images, or remove the image's EXIF orientation tag")
    return dataset_error(path, text)


@dataclass(frozen=True)
class ImageHeader:
    """What :func:`read_image_header` learns without decoding pixels: stored ``height``, ``width``, EXIF
    ``orientation`` (1 = upright; 5..8 swap width and height when applied), and the file ``format``."""

    height: int
    width: int
    orientation: int = 1
    format: str = ""

    @property
    def displayed_size(self) -> tuple[int, int]:
        """``(height, width)`` with the EXIF orientation applied: the size boxes and annotations refer to."""
        return displayed_size(self.height, self.width, self.orientation)


def read_image_header(path: str) -> ImageHeader:
    """Size, EXIF orientation and format of an image file from its header (plus a truncation check for JPEGs).

    Raises DatasetError naming the file when it is missing, empty, not an image, or a truncated JPEG.
    """
    try:
        with open(path, "rb") as f, Image.open(f) as im:
            width, height = im.size
            orientation = exif_orientation(im)
            fmt = im.format or ""
            f.seek(0)
            head = f.read(2)
            f.seek(-2, os.SEEK_END)
            tail = f.read(2)
    except FileNotFoundError:
        raise dataset_error(path, "image file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        what = "empty file (0 bytes)" if size == 0 else f"not an image PIL can read ({e})"
        raise dataset_error(path, f"cannot read image header: {what}") from None
    truncated = truncation_error(path, head, tail)
    if truncated:
        raise dataset_error(path, truncated)
    return ImageHeader(int(height), int(width), orientation, fmt)


def read_image_rgb(path: str) -> np.ndarray:
    """Read an image file -> ndarray[H, W, 3] uint8 RGB as displayed (EXIF orientation applied).

    Raises DatasetError naming the file when it is missing, cannot be decoded, or is a truncated JPEG
    (which OpenCV would decode with a grey bottom and only a libjpeg warning naming no file).
    """
    return read_image_oriented(path)[0]


def read_image_oriented(path: str) -> tuple[np.ndarray, int]:
    """Read an image file -> ``(ndarray[H, W, 3] uint8 RGB as displayed, EXIF orientation 1..8 applied to it)``.

    The file is read and decoded once: OpenCV decodes the stored pixels (its own EXIF handling off) and PIL reads
    the orientation tag from the same bytes (header only). Errors as :func:`read_image_rgb`.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)  # (nbytes,)
    except OSError:
        data = np.zeros(0, np.uint8)
    truncated = truncation_error(path, data[:2].tobytes(), data[-2:].tobytes())
    if truncated:
        raise dataset_error(path, truncated)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise dataset_error(path, "cannot read image (missing file or not an image OpenCV can decode)")
    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            orientation = exif_orientation(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # PIL cannot open it: no EXIF known
        orientation = 1
    return apply_orientation(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), orientation), orientation
