"""Image values as datasets store them, turned into checked, encoded bytes.

An image value may be encoded bytes, a ``datasets`` Image struct ``{"bytes", "path"}``, a
decoded PIL image, or a path relative to a folder (the data file's, or the source's
``image_root``). Bytes are kept exactly as stored, never re-encoded, except a decoded PIL image
(written as PNG) and a crop (a JPEG stays JPEG at quality 95, anything else becomes PNG).
Every image is decoded by PIL before a row is made, so a row's images are known to be readable.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

JPEG_QUALITY = 95  # a crop re-encodes; 95 keeps JPEG artefacts below what the source has


def load_image(value: Any, root: Path | None) -> bytes:
    """Encoded image bytes from any stored form, checked to decode; ``ValueError`` says why not."""
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise ValueError("image struct holds neither bytes nor a path")
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str) and value:
        data = _read_path(value, root)
    elif value is None or value == "":
        raise ValueError("no image")
    else:
        raise ValueError(f"holds {type(value).__name__}; expected bytes, an image struct or a path")
    check_image(data)
    return data


def _read_path(value: str, root: Path | None) -> bytes:
    if "://" in value:
        raise ValueError(f"{value!r} is a URL; images are read from local files only")
    path = Path(value).expanduser()
    if not path.is_absolute():
        if root is None:
            raise ValueError(
                f"relative path {value!r} in a Hub dataset cannot be resolved; set `image_root:`"
            )
        path = root / path
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None


def check_image(data: bytes) -> None:
    """Raise ``ValueError`` unless ``data`` is a non-empty image PIL can fully decode."""
    if not data:
        raise ValueError("zero-size image (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # structure and checksums, without decoding
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            # verify() does not catch truncated JPEG data; a reduced-size decode does, cheaply.
            im.draft("RGB", (64, 64))
            im.load()
    except Exception as err:  # PIL raises many types for undecodable data
        raise ValueError(f"not a decodable image: {type(err).__name__}: {err}") from None
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"zero-size image ({size[0]}x{size[1]})")


def crop_image(data: bytes, box: tuple[int, int, int, int]) -> bytes:
    """The pixels inside ``box`` ([left, top, right, bottom]) as a new encoded image."""
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        if box[2] > width or box[3] > height:
            raise ValueError(f"crop box {list(box)} lies outside the {width}x{height} image")
        fmt = "JPEG" if im.format == "JPEG" else "PNG"
        part = im.crop(box)
        buffer = io.BytesIO()
        if fmt == "JPEG":
            part.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        else:
            part.save(buffer, format="PNG")
    return buffer.getvalue()
