"""Redaction for exports (Art. 10(1), Art. 12): obscure regions and bystanders' faces.

Faces are found by OpenCV's Haar cascades, which ship inside the ``opencv-python-headless``
package (on the Pi, apt's ``python3-opencv`` has them in ``opencv-data``): nothing is
downloaded at run time. The detector looks at the picture's luma at a reduced size,
frontal faces and profiles facing either way. It misses faces that are small, turned away
or half hidden: a person must look at every redacted clip before it leaves (the cover
sheet and the export page say so).

Obscuring is a coarse mosaic of the region in all three planes (Y, U, V): the blocks are
large enough that nothing of the face survives, unlike a light Gaussian blur.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HOLD_FRAMES = 8  # a face stays covered this many frames before and after it is seen
_MARGIN = 0.25  # grow each face box by this much on every side (hair, ears, chin)
_DETECT_WIDTH = 640


# Where Debian's (and so Raspberry Pi OS's) opencv-data puts the cascades: apt's python3-opencv,
# unlike PyPI's wheels, has no cv2.data and carries none itself.
DEBIAN_CASCADES = Path("/usr/share/opencv4/haarcascades")


def _cascades(cv2) -> Path:
    data = getattr(cv2, "data", None)
    return Path(data.haarcascades) if data is not None else DEBIAN_CASCADES


class FaceDetector:
    def __init__(self, min_size: int = 24):
        try:
            import cv2
        except ImportError as exc:  # pragma: no cover - a dependency of kiroku
            raise RuntimeError("face blurring needs OpenCV: pip install opencv-python-headless "
                               "(apt install python3-opencv on the Pi)") from exc
        self._cv2 = cv2
        root = _cascades(cv2)
        self._frontal = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_default.xml"))
        self._profile = cv2.CascadeClassifier(str(root / "haarcascade_profileface.xml"))
        if self._frontal.empty() or self._profile.empty():
            raise RuntimeError(f"OpenCV's face cascades are missing from {root}: reinstall opencv-python-headless "
                               "(apt install opencv-data on the Pi)")
        self._min = min_size

    def detect(self, luma: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) in the picture's pixels, already grown by the margin."""
        cv2 = self._cv2
        h, w = luma.shape
        scale = min(1.0, _DETECT_WIDTH / w)
        small = cv2.resize(luma, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
            if scale < 1 else luma
        small = cv2.equalizeHist(small)
        found = []
        kw = {"scaleFactor": 1.1, "minNeighbors": 4, "minSize": (self._min, self._min)}
        found += list(self._frontal.detectMultiScale(small, **kw))
        found += list(self._profile.detectMultiScale(small, **kw))
        sw = small.shape[1]
        for x, y, bw, bh in self._profile.detectMultiScale(cv2.flip(small, 1), **kw):
            found.append((sw - x - bw, y, bw, bh))
        boxes = []
        for x, y, bw, bh in found:
            mx, my = bw * _MARGIN, bh * _MARGIN
            boxes.append((int((x - mx) / scale), int((y - my) / scale), int((bw + 2 * mx) / scale) + 1,
                          int((bh + 2 * my) / scale) + 1))
        return boxes


def obscure(planes: np.ndarray, width: int, height: int, box: tuple[int, int, int, int]) -> None:
    """Mosaic ``box`` (x, y, w, h in pixels) in a yuv420p frame held as one stacked array
    (Y rows, then U, then V at half size), in place."""
    import cv2

    x, y, w, h = box
    x0, y0 = max(0, x) & ~1, max(0, y) & ~1  # even, so the chroma box lines up
    x1, y1 = min(width, x + w), min(height, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    _mosaic(cv2, planes[:height], x0, y0, x1, y1)
    cw, ch = width // 2, height // 2
    chroma = planes[height:].reshape(2, ch, cw)  # a view: U, then V
    for plane in chroma:
        _mosaic(cv2, plane, x0 // 2, y0 // 2, (x1 + 1) // 2, (y1 + 1) // 2)


def _mosaic(cv2, plane: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    region = plane[y0:y1, x0:x1]
    rh, rw = region.shape
    if rw < 1 or rh < 1:
        return
    block = max(8, max(rw, rh) // 6)  # at most ~6 blocks across a face
    small = cv2.resize(region, (max(1, rw // block), max(1, rh // block)), interpolation=cv2.INTER_AREA)
    region[:] = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_NEAREST)
