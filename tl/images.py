"""Decode untrusted image files into RGB uint8 arrays, with one clear sentence on failure.

Used for training folders, uploads and the CLI alike, so an image looks the same to the
model everywhere: EXIF orientation applied, first frame of animations, every mode
(grayscale, palette, alpha, CMYK, 16-bit) turned into 8-bit RGB.
"""

import io
import warnings

import numpy as np

from tl.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx"}


def is_junk(name: str) -> bool:
    """Whether a file or folder name is OS clutter or hidden (skipped in image folders and zips)."""
    return name.lower() in JUNK_NAMES or name.startswith(".")
MAX_PIXELS = 40_000_000  # about 7300 x 5500: larger than any phone photo
MAX_BYTES = 50 * 1024 * 1024


class ImageError(UserError, ValueError):
    """An image file that cannot be used; the text says why in one sentence."""


def decode_image(source, *, name: str = "The file", draft_size: int | None = None,
                 max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Decode ``source`` (bytes or a path) into an ``(H, W, 3)`` uint8 RGB array.

    Args:
        source: the file's bytes, or a path to read.
        name: how the message names the file (e.g. its upload name).
        draft_size: let JPEG decode at a reduced scale that is still at least this many
            pixels on each side (much faster for large photos that will be shrunk anyway).
        max_pixels: refuse images with more pixels than this (decompression bombs).
        max_bytes: refuse files larger than this.

    Raises:
        ImageError: empty, too large, not an image, truncated or corrupt.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    data = _read_bytes(source, name, max_bytes)
    if not data:
        raise ImageError(f"{name} is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{name} is too large ({width}x{height} pixels); the limit is "
                    f"{max_pixels / 1e6:.0f} megapixels: shrink it and try again."
                )
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            f"{name} is not an image that can be read (use JPEG, PNG, WebP, BMP, GIF or TIFF)."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name} is too large to decode safely (a decompression bomb?); shrink it and try again."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name} is truncated or corrupt ({_first_line(exc)}).") from None


def _read_bytes(source, name, max_bytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = read_regular_file(source, name, max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"{name} is larger than {max_bytes // (1024 * 1024)} MB; shrink it and try again.")
    return data


def read_regular_file(path, name: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path``, which must be a regular file: a named pipe, a
    device or a socket is refused instead of read (reading a pipe blocks for ever). Opened
    without blocking and checked on the open descriptor, so it cannot be swapped in between.

    Raises:
        ImageError: not a regular file, or unreadable.
    """
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ImageError(f"{name} cannot be read ({exc.strerror or exc}).") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f"{name} is not a regular file (a pipe, device or socket); give an image file.")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit)
    except OSError as exc:
        raise ImageError(f"{name} cannot be read ({exc.strerror or exc}).") from None
    finally:
        os.close(fd)


def _to_rgb(image) -> np.ndarray:
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float grayscale: PIL's convert("RGB") would clip, so scale to 8 bits.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(values.max()), 1.0)
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Composite on white: transparent pixels would otherwise become arbitrary colours.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__



def resize_bilinear(image, size: int) -> np.ndarray:
    """``image`` (H, W, 3, 0-255) as float32 ``(size, size, 3)``: bilinear with the kernel
    widened when shrinking (anti-aliased), half-pixel centres, aspect ratio not kept. This is
    what the models' ``resize`` layer computes (Keras ``Resizing(antialias=True)``), to about
    0.003 of 255 on photos, in Pillow's C code per channel: about a third of the layer's time
    called eagerly, and without the GIL, so threads overlap it with a model's pass."""
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float32)
    if pixels.shape[:2] == (size, size):
        return pixels.copy()
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c]), mode="F")
                           .resize((size, size), Image.Resampling.BILINEAR)) for c in range(pixels.shape[2])]
    return np.stack(channels, axis=-1)
