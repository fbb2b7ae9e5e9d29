"""Stimulus PNGs that carry pixels only: no text chunks (prompts, parameters), EXIF, ICC profile or name.

The one cleaning rule for every image a participant may receive: generation stores rendered images through
it, studies imports stimuli through it and serves each image through it.
"""

import io
from pathlib import Path

from PIL import Image

from peftlab.errors import UserInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def png_chunk_types(data: bytes) -> set[bytes]:
    """The chunk types of PNG `data` (empty if `data` is not a PNG)."""
    if not data.startswith(PNG_SIGNATURE):
        return set()
    offset, chunks = len(PNG_SIGNATURE), set()
    while offset + 8 <= len(data):
        chunks.add(data[offset + 4 : offset + 8])
        offset += 12 + int.from_bytes(data[offset : offset + 4], "big")
    return chunks


def png_clean(source: bytes | Path | Image.Image, *, compress_level: int = 6) -> bytes:
    """`source` as a PNG of pixel chunks only; PNG bytes that are already clean come back unchanged.

    Raises UserInputError when `source` is not a readable image (naming the file when it is one).
    """
    name = str(source) if isinstance(source, Path) else "the image"
    try:
        if isinstance(source, Image.Image):
            return _pixels_png(source, compress_level)
        data = source.read_bytes() if isinstance(source, Path) else source
        chunks = png_chunk_types(data)
        if chunks and chunks <= PIXEL_CHUNKS:
            return data
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _pixels_png(image, compress_level)
    except OSError as error:  # UnidentifiedImageError included
        raise UserInputError(f"{name} is not a readable image ({error}); fix or remove it.") from None


def _pixels_png(image: Image.Image, compress_level: int) -> bytes:
    """PNG bytes of a fresh image built from `image`'s pixels alone."""
    # A fresh image carries no `info`, so PIL writes no tEXt/iTXt/zTXt/eXIf/iCCP chunk.
    converted = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    pixels = Image.frombytes(converted.mode, converted.size, converted.tobytes())
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
