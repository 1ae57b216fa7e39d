"""Label Studio's coordinates: region geometry is in percent of the image's width / height, ours in pixels with
integer coordinates at pixel centres (as COCO and the codecs use them). One conversion, used by task building, the
annotation reader and the import of Label Studio projects (pipeline.data.labelstudio.source)."""

from __future__ import annotations

import numpy as np


def px_to_percent(value: float | np.ndarray, size: float) -> float | np.ndarray:
    """Image pixel coordinate (integer = pixel centre) -> Label Studio percent of ``size`` (width or height)."""
    return (value + 0.5) * 100.0 / size


def percent_to_px(value: float | np.ndarray, size: float) -> float | np.ndarray:
    """Label Studio percent of ``size`` -> image pixel coordinate (integer = pixel centre); inverse of px_to_percent."""
    return value * size / 100.0 - 0.5
