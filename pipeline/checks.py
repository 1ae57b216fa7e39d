"""What counts as a number or an integer in a file someone else wrote (COCO files, corrections, predictions).

One rule everywhere: bool is not a number (it is an int subclass in Python, and a true/false where a coordinate or an
id belongs is a bug in whatever wrote the file); numpy scalars are numbers (the stages compute with numpy and pandas).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_number(value: Any) -> bool:
    """A real number, finite or not (callers that report NaN separately check ``is_finite_number`` after this)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def is_finite_number(value: Any) -> bool:
    if not is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False
