"""tl.images.decode_image: every format and mode to RGB uint8; bad files get one sentence."""

import io
from pathlib import Path

import numpy as np
import pytest
import skimage
import sklearn.datasets
from PIL import Image

from tl.images import ImageError, decode_image

SKIMAGE = Path(skimage.data.__file__).parent
SKLEARN = Path(sklearn.datasets.__file__).parent / "images"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo() -> np.ndarray:
    return np.asarray(Image.open(SKIMAGE / "chelsea.png").convert("RGB"))


@pytest.mark.parametrize("path", [SKLEARN / "china.jpg", SKIMAGE / "coffee.png", SKIMAGE / "rocket.jpg",
                                  SKIMAGE / "astronaut.png", SKIMAGE / "camera.png"])
def test_real_files_decode_to_rgb_uint8(path):
    image = decode_image(path.read_bytes(), name=path.name)
    with Image.open(path) as reference:
        width, height = reference.size
    assert image.dtype == np.uint8 and image.shape == (height, width, 3)
    assert image.std() > 10  # a real picture, not a blank


def test_gif_gives_its_first_frame():
    path = SKIMAGE / "no_time_for_that_tiny.gif"
    with Image.open(path) as gif:
        assert getattr(gif, "n_frames", 1) > 1
        first = np.asarray(gif.convert("RGB"))
    np.testing.assert_array_equal(decode_image(path), first)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_each_format(fmt):
    rgb = photo()
    data = encode(Image.fromarray(rgb), fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    decoded = decode_image(data)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 4  # lossy formats are close, others exact


def test_modes_become_rgb():
    rgb = photo()
    gray = decode_image(encode(Image.fromarray(rgb).convert("L"), "PNG"))
    assert gray.shape == rgb.shape and (gray[..., 0] == gray[..., 2]).all()
    quantized = Image.fromarray(rgb).quantize(64)
    palette = decode_image(encode(quantized, "PNG"))
    np.testing.assert_array_equal(palette, np.asarray(quantized.convert("RGB")))
    cmyk = decode_image(encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95))
    assert cmyk.shape == rgb.shape and np.abs(cmyk.astype(int) - rgb).mean() < 12
    # 16-bit grayscale: scaled to 8 bits, not clipped to white.
    ramp = (np.arange(256 * 64, dtype=np.uint16).reshape(64, 256) * 4).astype(np.uint16)
    sixteen = decode_image(encode(Image.fromarray(ramp), "PNG"))
    assert sixteen.min() == 0 and 250 <= sixteen.max() <= 255 and len(np.unique(sixteen)) > 200
    # Alpha is composited on white: a fully transparent pixel is white whatever its colour.
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, :, 3] = 255
    out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out[:4] == (255, 0, 0)).all() and (out[4:] == 255).all()


def test_exif_orientation_is_applied():
    rgb = photo()
    stored = np.rot90(rgb, k=-1)  # the sensor's pixels; orientation 8 says rotate back
    exif = Image.Exif()
    exif[0x0112] = 8
    decoded = decode_image(encode(Image.fromarray(stored), "PNG", exif=exif.tobytes()))
    np.testing.assert_array_equal(decoded, rgb)


@pytest.mark.parametrize("data, expected", [
    (b"", "is empty"),
    (b"hello, this is a text file\n" * 20, "is not an image"),
    (encode(Image.fromarray(photo()), "JPEG")[:3000], "truncated or corrupt"),
    (encode(Image.new("1", (8000, 6000)), "PNG"), "too large"),
])
def test_bad_files_get_one_sentence(data, expected):
    with pytest.raises(ImageError) as info:
        decode_image(data, name="upload.jpg")
    message = str(info.value)
    assert message.startswith("upload.jpg ") and expected in message and "\n" not in message


def test_byte_limit_and_unreadable_path(tmp_path):
    with pytest.raises(ImageError, match="larger than 1 MB"):
        decode_image(b"x" * (1024 * 1024 + 1), max_bytes=1024 * 1024)
    with pytest.raises(ImageError, match="cannot be read"):
        decode_image(tmp_path / "missing.png", name="missing.png")
