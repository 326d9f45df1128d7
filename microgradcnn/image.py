"""Turn a photo or scan of one handwritten digit into an MNIST-style model input, with OpenCV.

MNIST digits were made by size-normalising each digit to fit a 20x20 box (keeping its aspect ratio,
with anti-aliasing) and then placing it in a 28x28 field so that its centre of mass sits at the centre.
A model trained on MNIST only works on inputs that look like that, so :func:`preprocess_digit` redoes
those steps on an arbitrary image:

1. grayscale (BGR, BGRA and 16-bit/float images are accepted; transparency is flattened);
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


def _where(name: str | None) -> str:
    return f"{name}: " if name else ""


def _to_gray(image: np.ndarray, name: str | None) -> np.ndarray:
    """Any OpenCV image (H,W), (H,W,1), BGR (H,W,3) or BGRA (H,W,4), any depth -> float32 gray 0..255."""
    if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{_where(name)}expected a (H, W), (H, W, 3) or (H, W, 4) image, got {image.shape}")
    if image.dtype == np.uint8:
        scale = 1.0
    elif image.dtype == np.uint16:  # 16-bit PNG/TIFF
        scale = 255.0 / 65535.0
    elif image.dtype == np.bool_:
        scale = 255.0
    elif np.issubdtype(image.dtype, np.floating):  # float images are conventionally 0..1
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
    elif np.issubdtype(image.dtype, np.integer):  # other integer types: taken at face value, 0..255
        scale = 1.0
    else:
        raise ValueError(f"{_where(name)}unsupported image dtype {image.dtype}")
    pixels = np.nan_to_num(image.astype(np.float32) * np.float32(scale))
    pixels = np.clip(pixels, 0.0, 255.0)
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[2] == 1:
        return pixels[:, :, 0]
    # OpenCV's BGR -> gray weights (ITU-R BT.601), computed in float to keep 16-bit precision.
    gray = pixels[:, :, 0] * 0.114 + pixels[:, :, 1] * 0.587 + pixels[:, :, 2] * 0.299
    if pixels.shape[2] == 4:
        alpha = pixels[:, :, 3] / 255.0
        if (alpha < 1.0).any():
            opaque = alpha > 0.5
            if not opaque.any():
                raise ValueError(f"{_where(name)}no digit found: the image is fully transparent")
            # Colour under transparent pixels is arbitrary (often black), so flatten onto a background
            # that contrasts with what is drawn: dark strokes onto white, light strokes onto black.
            background = 255.0 if float(np.median(gray[opaque])) < 128.0 else 0.0
            gray = gray * alpha + background * (1.0 - alpha)
    return gray.astype(np.float32)


def _border(gray: np.ndarray) -> np.ndarray:
    """The pixels of a frame around the image, ~5% of its size thick (at least 1 px)."""
    h, w = gray.shape
    t = max(1, min(h, w) // 20)
    return np.concatenate([gray[:t].ravel(), gray[-t:].ravel(), gray[:, :t].ravel(), gray[:, -t:].ravel()])


def _ink_bbox(ink: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the pixels that carry noticeable ink (>10% of full scale)."""
    ys, xs = np.nonzero(ink > 25.5)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def preprocess_digit(image: np.ndarray, *, name: str | None = None) -> np.ndarray:
    """MNIST-style preprocessing of one digit image already in memory (see the module docstring).

    ``image`` is what OpenCV gives you: gray ``(H, W)`` / ``(H, W, 1)``, BGR ``(H, W, 3)`` or BGRA
    ``(H, W, 4)``, ``uint8``, ``uint16`` or float (0..1). Dark-on-light and light-on-dark both work.
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
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep_ids = 1 + np.flatnonzero(areas >= max(1.0, _MIN_SPECK_FRACTION * float(areas.max())))
    keep = np.isin(labels, keep_ids).astype(np.uint8)
    # Grow the kept mask by a pixel so the anti-aliased stroke edges (below Otsu's threshold) survive.
    halo = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    digit = np.where(halo > 0, ink8, 0).astype(np.uint8)

    y0, y1, x0, x1 = _ink_bbox(digit)
    scale = _BOX / max(y1 - y0, x1 - x0)
    if scale < 1.0:
        # A thin pen line on a large photo would shrink to a faint sub-pixel trace; thicken it first so
        # that after resizing it is about as wide as an MNIST stroke. Stroke width ~ 2x the distance
        # from the medial axis to the edge (90th percentile of the distance transform inside the ink).
        dist = cv2.distanceTransform(keep, cv2.DIST_L2, 3)
        width = 2.0 * float(np.percentile(dist[keep > 0], 90))
        radius = int(np.ceil((_TARGET_STROKE / scale - width) / 2.0))
        if radius >= 1:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            digit = cv2.dilate(digit, kernel)  # grey dilation = max filter: widens light strokes
            y0, y1, x0, x1 = _ink_bbox(digit)
            scale = _BOX / max(y1 - y0, x1 - x0)

    crop = digit[y0:y1, x0:x1]
    h, w = crop.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    # INTER_AREA averages the source pixels (proper anti-aliasing) when shrinking; when enlarging a tiny
    # digit it degenerates to nearest-neighbour blocks, so use bilinear there instead.
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    patch = cv2.resize(crop, size, interpolation=interpolation).astype(np.float32)
    if patch.max() <= 0:
        raise ValueError(f"{_where(name)}no digit found")
    patch *= 255.0 / float(patch.max())  # full contrast, like MNIST (max 255 in every digit)

    # Integer shift placing the centre of mass at (14, 14) in pixel-index coordinates, as MNIST's digits
    # are (their mean centre of mass is (14.0, 14.0)); clipped so the patch stays inside the field.
    moments = cv2.moments(patch)
    cy, cx = moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]
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
