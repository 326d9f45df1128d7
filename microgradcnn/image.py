"""Turn a photo or scan of one handwritten digit into an MNIST-style model input, with OpenCV.

MNIST digits were made by size-normalising each digit to fit a 20x20 box (keeping its aspect ratio,
with anti-aliasing) and then placing it in a 28x28 field so that its centre of mass sits at the centre.
A model trained on MNIST only works on inputs that look like that, so :func:`preprocess_digit` redoes
those steps on an arbitrary image:

1. grayscale (BGR, BGRA and 16-bit/float images are accepted; transparency is flattened), shrunk with
   ``INTER_AREA`` so that the longer side is at most 1024 px: every later step then costs the same for a
   64 MP photo as for a 1 MP one;
2. polarity: MNIST is light ink on a black background, so an image whose border is light is inverted;
3. background removal: the border brightness is subtracted, Otsu's threshold finds the ink, small
   specks (dust, JPEG noise) are dropped, everything but the digit is zeroed;
4. thin strokes (a pen line on a big photo) are thickened so they survive the downscale;
5. crop to the digit's bounding box, resize it so its longer side is 20 px (``INTER_AREA``);
6. paste into 28x28 with the centre of mass at pixel (14, 14);
7. scale exactly like the training data: ``x / 255 - 0.5``.

The result is ``float32`` ``(1, 28, 28)``; stack several along axis 0 for a batch.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = ["load_digit_image", "preprocess_digit"]

_FIELD = 28  # MNIST image size
_BOX = 20  # the digit's longer side after size normalisation (MNIST: 20x20 box)
_MIN_CONTRAST = 24.0  # grey levels (of 255) between background and ink below which we call it blank
_MIN_SPECK_FRACTION = 0.02  # ink blobs smaller than this fraction of the largest one are noise
_TARGET_STROKE = 2.5  # typical MNIST stroke width in pixels inside the 20x20 box
# Longer side, in pixels, of the copy an image is analysed at: a digit filling it is still ~50x the 20 px box,
# and the analysis then costs the same (tens of milliseconds) for a 12 MP photo as for a 1 MP one.
_WORK_SIDE = 1024


def _where(name: str | None) -> str:
    return f"{name}: " if name else ""


def _native(image: np.ndarray, name: str | None) -> tuple[np.ndarray, float]:
    """``image`` in a depth OpenCV resizes and converts (uint8, uint16 or float32 0..255) and its full scale.

    uint8 and uint16 are passed through untouched (no full-size copy of a large photo); the rare other
    depths are converted here, at full size.
    """
    if image.dtype == np.uint8:
        return image, 255.0
    if image.dtype == np.uint16:  # 16-bit PNG/TIFF
        return image, 65535.0
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * np.uint8(255), 255.0
    if np.issubdtype(image.dtype, np.floating):
        with np.errstate(over="ignore", invalid="ignore"):  # huge values saturate at 255 below anyway
            pixels = np.nan_to_num(image.astype(np.float32), nan=0.0, neginf=0.0)
            scale = 255.0 if float(pixels.max()) <= 1.0 else 1.0  # float images are conventionally 0..1
            return np.clip(pixels * np.float32(scale), 0.0, 255.0).astype(np.float32), 255.0
    if np.issubdtype(image.dtype, np.integer):  # other integer types: taken at face value, 0..255
        return np.clip(image, 0, 255).astype(np.uint8), 255.0
    raise ValueError(f"{_where(name)}unsupported image dtype {image.dtype}")


def _working_size(height: int, width: int) -> tuple[int, int] | None:
    """(width, height) to shrink an image to before it is analysed, or None if it is small enough already."""
    factor = _WORK_SIDE / max(height, width)
    if factor >= 1.0:
        return None
    return max(1, round(width * factor)), max(1, round(height * factor))


def _shrink(pixels: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    # INTER_AREA averages: a thin stroke gets fainter, not lost, and the ink's mass is kept.
    return pixels if size is None else cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _to_gray(image: np.ndarray, name: str | None) -> np.ndarray:
    """Any OpenCV image (H,W), (H,W,1), BGR (H,W,3) or BGRA (H,W,4), any depth -> float32 gray 0..255,
    shrunk with ``INTER_AREA`` so that its longer side is at most ``_WORK_SIDE`` pixels.

    Everything after this works on the shrunk copy, so a 64 MP photo costs what a 1 MP one does; at full
    size there is only the colour conversion, in the image's own depth.
    """
    if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{_where(name)}expected a (H, W), (H, W, 3) or (H, W, 4) image, got {image.shape}")
    pixels, full = _native(image, name)
    size = _working_size(*pixels.shape[:2])
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        return _shrink(np.ascontiguousarray(pixels), size).astype(np.float32) * np.float32(255.0 / full)
    # OpenCV's BGR -> gray weights (ITU-R BT.601).
    code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    gray = cv2.cvtColor(np.ascontiguousarray(pixels), code)
    alpha = pixels[:, :, 3] if pixels.shape[2] == 4 else None
    if alpha is None or bool((alpha >= full).all()):
        return _shrink(gray, size).astype(np.float32) * np.float32(255.0 / full)
    alpha = np.ascontiguousarray(alpha)
    opaque = alpha > full / 2
    if not opaque.any():
        raise ValueError(f"{_where(name)}no digit found: the image is fully transparent")
    # Colour under transparent pixels is arbitrary (often black), so flatten onto a background that
    # contrasts with what is drawn: dark strokes onto white, light strokes onto black. Flattening is linear
    # in the premultiplied colour and the alpha, so shrink those two and flatten afterwards: the average
    # then weighs what is seen, not the colour hidden under transparent pixels.
    background = 255.0 if float(np.median(gray[opaque])) < full / 2 else 0.0
    seen = cv2.multiply(gray, alpha, scale=1.0 / full)  # gray * alpha, in the image's depth
    seen = _shrink(seen, size).astype(np.float32) * np.float32(255.0 / full)
    coverage = _shrink(alpha, size).astype(np.float32) * np.float32(1.0 / full)
    return (seen + np.float32(background) * (np.float32(1.0) - coverage)).astype(np.float32)


def _border(gray: np.ndarray) -> np.ndarray:
    """The pixels of a frame around the image, ~5% of its size thick (at least 1 px)."""
    h, w = gray.shape
    t = max(1, min(h, w) // 20)
    return np.concatenate([gray[:t].ravel(), gray[-t:].ravel(), gray[:, :t].ravel(), gray[:, -t:].ravel()])


def _ink_bbox(ink: np.ndarray, name: str | None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the pixels that carry noticeable ink (>10% of full scale)."""
    ys, xs = np.nonzero(ink > 25.5)
    if ys.size == 0:
        raise ValueError(f"{_where(name)}no digit found: no stroke is left after removing the specks")
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _thicken(digit: np.ndarray, keep: np.ndarray, radius: float) -> np.ndarray:
    """``digit`` with every pixel within ``radius`` of the ink mask ``keep`` set to full ink.

    Computed from the distance of each pixel to the ink, which costs the same whatever the radius; a
    dilation with a disc costs the disc's area per pixel, and a stroke on a large photo needs a wide disc.
    The disc's rim is anti-aliased over one pixel.
    """
    distance = cv2.distanceTransform(1 - keep, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    grown = np.clip(np.float32(radius + 0.5) - distance, 0.0, 1.0) * np.float32(255.0)
    return np.maximum(digit, grown.astype(np.uint8))


def _centre_of_mass(patch: np.ndarray, name: str | None) -> tuple[float, float]:
    """(row, column) of the centre of mass of a float image, in pixel-index coordinates.

    Summed here rather than with ``cv2.moments``, which takes an (N, 2) array (a digit 2 px wide after the
    resize) for a list of N points and returns zero area.
    """
    total = float(patch.sum(dtype=np.float64))
    if not total > 0.0:
        raise ValueError(f"{_where(name)}no digit found: nothing is left after resizing")
    rows = patch.sum(axis=1, dtype=np.float64) @ np.arange(patch.shape[0], dtype=np.float64)
    cols = patch.sum(axis=0, dtype=np.float64) @ np.arange(patch.shape[1], dtype=np.float64)
    return float(rows) / total, float(cols) / total


def preprocess_digit(image: np.ndarray, *, name: str | None = None) -> np.ndarray:
    """MNIST-style preprocessing of one digit image already in memory (see the module docstring).

    ``image`` is what OpenCV gives you: gray ``(H, W)`` / ``(H, W, 1)``, BGR ``(H, W, 3)`` or BGRA
    ``(H, W, 4)``, ``uint8``, ``uint16`` or float (0..1). Dark-on-light and light-on-dark both work; any
    size works, in bounded time (the analysis runs on a copy at most 1024 px on its longer side).
    Returns ``float32`` ``(1, 28, 28)`` in ``[-0.5, 0.5]``: the digit fitted into 20x20, centre of mass at
    (14, 14), background ``-0.5``. ``name`` (e.g. the file path) is used in error messages.

    Raises ``ValueError`` if the array is not an image or holds no digit (blank / uniform image).
    """
    gray = _to_gray(np.asarray(image), name)
    if float(gray.max() - gray.min()) < _MIN_CONTRAST:
        raise ValueError(f"{_where(name)}no digit found: the image is blank (nearly uniform)")

    # Polarity: the background is whatever the border mostly is. Compare it with both extremes rather
    # than with 128 so that grey paper with dark ink and a grey board with chalk both come out right.
    background = float(np.median(_border(gray)))
    if background - gray.min() > gray.max() - background:  # background is light -> dark ink -> invert
        gray = 255.0 - gray
        background = 255.0 - background
    ink = np.clip(gray - background, 0.0, None)
    peak = float(ink.max())
    if peak < _MIN_CONTRAST:
        raise ValueError(f"{_where(name)}no digit found: nothing stands out from the background")
    ink8 = np.clip(ink * (255.0 / peak), 0, 255).astype(np.uint8)

    # Otsu separates ink from (the rest of) the background; connected components drop dust and noise.
    _, mask = cv2.threshold(ink8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        raise ValueError(f"{_where(name)}no digit found")
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    kept = areas >= max(1.0, _MIN_SPECK_FRACTION * float(areas[1:].max()))
    kept[0] = False  # label 0 is the background
    keep = kept.astype(np.uint8)[labels]  # a lookup table: one pass over the pixels
    # Grow the kept mask by a pixel so the anti-aliased stroke edges (below Otsu's threshold) survive.
    halo = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    digit = np.where(halo > 0, ink8, 0).astype(np.uint8)

    y0, y1, x0, x1 = _ink_bbox(digit, name)
    scale = _BOX / max(y1 - y0, x1 - x0)
    if scale < 1.0:
        # A thin pen line on a large photo would shrink to a faint sub-pixel trace; thicken it first so
        # that after resizing it is about as wide as an MNIST stroke. Stroke width ~ 2x the distance
        # from the medial axis to the edge (90th percentile of the distance transform inside the ink).
        dist = cv2.distanceTransform(keep, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        width = 2.0 * float(np.percentile(dist[keep > 0], 90))
        radius = (_TARGET_STROKE / scale - width) / 2.0
        if radius >= 0.5:
            digit = _thicken(digit, keep, radius)
            y0, y1, x0, x1 = _ink_bbox(digit, name)
            scale = _BOX / max(y1 - y0, x1 - x0)

    crop = digit[y0:y1, x0:x1]
    h, w = crop.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    # INTER_AREA averages the source pixels (proper anti-aliasing) when shrinking; when enlarging a tiny
    # digit it degenerates to nearest-neighbour blocks, so use bilinear there instead.
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    patch = cv2.resize(crop, size, interpolation=interpolation).astype(np.float32)
    if patch.max() <= 0:
        raise ValueError(f"{_where(name)}no digit found: nothing is left after resizing")
    patch *= 255.0 / float(patch.max())  # full contrast, like MNIST (max 255 in every digit)

    # Integer shift placing the centre of mass at (14, 14) in pixel-index coordinates, as MNIST's digits
    # are (their mean centre of mass is (14.0, 14.0)); clipped so the patch stays inside the field.
    cy, cx = _centre_of_mass(patch, name)
    ph, pw = patch.shape
    top = min(max(round(_FIELD / 2 - cy), 0), _FIELD - ph)
    left = min(max(round(_FIELD / 2 - cx), 0), _FIELD - pw)
    field = np.zeros((_FIELD, _FIELD), dtype=np.float32)
    field[top : top + ph, left : left + pw] = patch
    out = field * np.float32(1.0 / 255.0) - np.float32(0.5)
    return out[None].astype(np.float32)


def load_digit_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image file of a handwritten digit and return model input ``float32`` ``(1, 28, 28)``.

    Any format OpenCV decodes (PNG, JPEG, BMP, TIFF, WebP, ...); colour, grayscale, 16-bit and alpha
    channels are handled, and the JPEG EXIF orientation is honoured. The processing is
    :func:`preprocess_digit`; the scaling matches :func:`microgradcnn.data.preprocess`.

    Raises ``FileNotFoundError`` if ``path`` does not exist, ``ValueError`` (naming the file) if it is not
    a readable image or contains no digit.
    """
    # cv2.imread returns None for both a missing and an unreadable file; tell them apart first.
    if not os.path.exists(path):
        raise FileNotFoundError(f"digit image not found: {os.fspath(path)}")
    if os.path.isdir(path):
        raise ValueError(f"{os.fspath(path)}: is a directory, not an image file")
    # np.fromfile + imdecode instead of imread: works with non-ASCII paths on every platform and does not
    # print OpenCV warnings on undecodable files.
    buffer = np.fromfile(path, dtype=np.uint8)
    image = None
    if buffer.size:
        try:
            image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
    if image is None:
        raise ValueError(f"{os.fspath(path)}: not an image file OpenCV can read")
    if not (image.ndim == 3 and image.shape[2] == 4):
        # IMREAD_UNCHANGED ignores the EXIF orientation of phone photos; decode again honouring it (there
        # is no alpha to lose here), keeping the colour depth.
        oriented = cv2.imdecode(buffer, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
        if oriented is not None:
            image = oriented
    return preprocess_digit(image, name=os.fspath(path))
