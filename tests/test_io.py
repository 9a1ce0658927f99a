"""lib.common.io: every odd file a real collection holds, made here on purpose."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.common import io


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    return (np.arange(w)[None, :] * 3 + np.arange(h)[:, None]).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP"])
def test_reads_common_formats_by_content(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "scan.bin"  # the extension says nothing
    Image.fromarray(_gradient()).save(path, format=fmt)
    image = io.read_image(path)
    assert image.format == fmt
    assert image.pixels.shape[:2] == (40, 60) and image.pixels.dtype == np.uint8
    assert image.pixels.ndim == 2 or fmt == "WEBP"  # WebP stores grey as RGB
    tolerance = 12 if fmt in ("JPEG", "WEBP") else 0  # lossy formats
    assert np.abs(io.to_grey(image.pixels).astype(int) - _gradient()).max() <= tolerance


def test_png_named_jpg_is_read_as_png(tmp_path: Path) -> None:
    path = tmp_path / "no 96.jpg"
    Image.fromarray(_gradient()).save(path, format="PNG")
    assert io.read_image(path).format == "PNG"


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:16, :, 3] = 255  # top half opaque, bottom half transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = io.read_image(path)
    assert image.mode == "RGBA" and image.pixels.shape == (32, 32, 3)
    assert (image.pixels[:16] == 200).all() and (image.pixels[16:] == 0).all()


def test_palette_image_gives_its_colours(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, 16:] = (10, 200, 30)
    path = tmp_path / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(path)
    image = io.read_image(path)
    assert image.mode == "P"
    assert tuple(image.pixels[0, 31]) == (10, 200, 30) and tuple(image.pixels[0, 0]) == (0, 0, 0)


def test_16bit_is_windowed_to_full_8bit_range(tmp_path: Path) -> None:
    values = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "scan16.png"
    Image.fromarray(values).save(path)
    image = io.read_image(path)
    assert image.mode.startswith("I")
    assert image.pixels.dtype == np.uint8
    assert image.pixels.min() == 0 and image.pixels.max() == 255
    assert (np.diff(image.pixels.ravel().astype(int)) >= 0).all()  # order kept


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.fromarray(_gradient(40, 60)).save(path, exif=exif)
    assert io.read_image(path).pixels.shape == (60, 40)


def test_grey_pixels_stay_grey(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    Image.fromarray(_gradient()).save(path)
    image = io.read_image(path)
    assert image.mode == "L" and image.pixels.ndim == 2


BAD_FILES = {
    "zero-byte": (lambda p: p.write_bytes(b""), "empty file"),
    "text named .jpg": (lambda p: p.write_text("this is not an image\n"), "not a readable image"),
    "truncated JPEG": (lambda p: p.write_bytes(_jpeg_bytes()[:400]), "corrupt or truncated"),
    "1x1": (lambda p: Image.new("L", (1, 1)).save(p, format="PNG"), "too small"),
    "huge": (lambda p: Image.new("L", (8000, 6000)).save(p, format="PNG"), "too large"),
    "folder named .jpg": (lambda p: p.mkdir(), "a folder, not a file"),
}


def _jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    path_bytes = Image.fromarray(rng.integers(0, 255, (200, 200), dtype=np.uint8))
    from io import BytesIO

    buffer = BytesIO()
    path_bytes.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_one_clear_line_naming_the_file(tmp_path: Path, case: str) -> None:
    make, reason = BAD_FILES[case]
    path = tmp_path / "bad file.jpg"
    make(path)
    with pytest.raises(io.ImageReadError) as caught:
        io.read_image(path)
    message = str(caught.value)
    assert str(path) in message and reason in message
    assert "\n" not in message and ";" in message  # reason; what to do


def test_missing_file_is_an_image_read_error(tmp_path: Path) -> None:
    with pytest.raises(io.ImageReadError, match="no such file"):
        io.read_image(tmp_path / "absent.png")


def test_atomic_write_leaves_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    """Not mkstemp's 0600 for every output (bundle.json included): 0666 less the umask, as open() gives."""
    before = os.umask(umask)
    try:
        io.write_json_atomic(tmp_path / "bundle.json", {"a": 1})
        io.write_text_atomic(tmp_path / "README.md", "card")
        io.write_png(tmp_path / "g.png", _gradient())
    finally:
        os.umask(before)
    for name in ("bundle.json", "README.md", "g.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_png_round_trip_rgb_and_grey(tmp_path: Path) -> None:
    rgb = np.dstack([_gradient(), _gradient()[::-1], np.full((40, 60), 7, np.uint8)])
    io.write_png(tmp_path / "rgb.png", rgb)
    io.write_png(tmp_path / "g.png", _gradient())
    assert (io.read_image(tmp_path / "rgb.png").pixels == rgb).all()
    assert (io.read_image(tmp_path / "g.png").pixels == _gradient()).all()


def refuse(word: str) -> None:
    """json.loads' parse_constant: NaN, Infinity and -Infinity are not standard JSON."""
    raise ValueError(f"not standard JSON: {word}")


def test_json_files_are_standard_json(tmp_path: Path) -> None:
    """A mean over no slices (NaN) or an infinity becomes null; numpy values and paths become plain values."""
    io.write_json_atomic(tmp_path / "m.json", {"dice": float("nan"), "ci": np.array([np.inf, 0.5]),
                                               "n": np.int64(3), "folder": tmp_path})
    back = json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse)
    assert back == {"dice": None, "ci": [None, 0.5], "n": 3, "folder": str(tmp_path)}
    assert io.as_json({"dice": np.float32("nan")}) == {"dice": None}  # what a comparison with the file sees
