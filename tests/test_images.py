"""Loading any photo as upright RGB uint8, and one clear error naming the file for anything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenet.images import MAX_IMAGE_SIDE, ImageError, list_images, load_image

MISC = Path(__file__).parent / "data" / "misc"
FACE = Path(__file__).parent / "data" / "people" / "George_Clooney" / "George_Clooney_0001.jpg"


def test_grayscale_becomes_three_equal_channels():
    image = load_image(MISC / "coins.png")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    assert image.shape[:2] == Image.open(MISC / "coins.png").size[::-1]


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image[0, 0].tolist() == [200, 0, 0]
    assert image[3, 3].tolist() == [255, 255, 255]
    assert load_image(MISC / "alex-lacamoire.png").shape == (394, 424, 3)


def test_16_bit_png_is_rescaled_to_8_bit(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    image = load_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image[0, 0, 0] == 0 and image[-1, -1, 0] == 255
    assert np.all(np.diff(image[..., 0].ravel().astype(int)) >= 0)


def test_palette_image(tmp_path):
    Image.open(FACE).convert("P").save(tmp_path / "p.gif")
    image = load_image(tmp_path / "p.gif")
    assert image.shape == (250, 250, 3)
    assert np.abs(image.astype(int) - load_image(FACE).astype(int)).mean() < 20


def test_exif_orientation_is_applied(tmp_path):
    original = Image.open(FACE)
    rotated = original.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with "rotate 90 CW to display"
    rotated.save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "sideways.jpg")
    assert image.shape == (250, 250, 3)
    upright = np.asarray(original, dtype=float)
    assert np.abs(image - upright).mean() < 6  # back upright: close to the original pixels
    assert np.abs(np.asarray(rotated, dtype=float) - upright).mean() > 20


def test_huge_image_is_downscaled_not_refused(tmp_path):
    Image.new("RGB", (10000, 10000), (90, 120, 150)).save(tmp_path / "huge.jpg", quality=50)
    image = load_image(tmp_path / "huge.jpg")
    assert max(image.shape[:2]) <= MAX_IMAGE_SIDE
    assert image.shape[0] == image.shape[1]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("notes.jpg", b"this is a text file, not a photo\n", "not a readable image"),
        ("missing.jpg", None, "file not found"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as error:
        load_image(path)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_truncated_jpeg_raises_image_error():
    with pytest.raises(ImageError, match="truncated.jpg: cannot decode"):
        load_image(MISC / "truncated.jpg")


def test_list_images_ignores_other_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.JPG", "a/b/two.png", "notes.txt", "a/.hidden.jpg", "clip.mp4"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/b/two.png", "a/one.JPG"]
