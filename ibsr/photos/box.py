"""The user's rectangle around one object of a photo that holds several (`--box`, the service's
`box` field, the page's dragged rectangle, a queries.jsonl `box`), and the window it cuts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ibsr.errors import IbsrError

BOX_FORMAT = "X0,Y0,X1,Y1"


@dataclass(frozen=True)
class Box:
    """A rectangle of a photo that holds the object, in pixels of the upright photo (after EXIF
    orientation, the frame of a mask file and of what viewers and browsers show), at full
    resolution: x0 <= x < x1, y0 <= y < y1, so 0,0,W,H is the whole W x H photo.

    Built only finite and non-empty (x0 < x1, y0 < y1): a bad box fails before any photo is
    decoded. `check` fits it to one photo."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self):
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(v) for v in values):
            raise IbsrError(f"box {self}: coordinates must be finite numbers; give {BOX_FORMAT} in pixels")
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise IbsrError(f"box {self} is empty or inverted: need x0 < x1 and y0 < y1; give {BOX_FORMAT}, "
                            "the left-top then the right-bottom corner, in pixels")

    @classmethod
    def parse(cls, text: str) -> "Box":
        """A box from "x0,y0,x1,y1" (integers or floats)."""
        parts = str(text).split(",")
        try:
            if len(parts) != 4:
                raise ValueError
            values = [float(part) for part in parts]
        except ValueError:
            raise IbsrError(f"box {text!r} is not four numbers; give {BOX_FORMAT} in pixels, e.g. 10,20,300,240") \
                from None
        return cls(*values)

    @classmethod
    def from_value(cls, value) -> "Box":
        """A box from a JSON value: [x0, y0, x1, y1] or the text "x0,y0,x1,y1"."""
        if isinstance(value, str):
            return cls.parse(value)
        numbers = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not numbers or len(value) != 4:
            raise IbsrError(f"box {value!r} is not four numbers; give [x0, y0, x1, y1] in pixels")
        return cls(*(float(v) for v in value))

    def check(self, width: int, height: int, path=None) -> "Box":
        """This box on a width x height photo: clipped to the photo and widened to whole pixels
        (what is searched, and echoed in results). A box with no pixel in the photo is an error."""
        x0, y0 = max(self.x0, 0.0), max(self.y0, 0.0)
        x1, y1 = min(self.x1, float(width)), min(self.y1, float(height))
        if not (x0 < x1 and y0 < y1):
            raise IbsrError(f"box {self} lies outside the {width}x{height} image; give {BOX_FORMAT} within "
                            f"0,0,{width},{height} (pixels of the upright photo)", path)
        return Box(math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))

    def grown(self, fraction: float) -> "Box":
        """This box with `fraction` of its width and height added on every side."""
        dx, dy = (self.x1 - self.x0) * fraction, (self.y1 - self.y0) * fraction
        return Box(self.x0 - dx, self.y0 - dy, self.x1 + dx, self.y1 + dy)

    def to_list(self) -> list:
        """[x0, y0, x1, y1], whole numbers as ints (JSON answers)."""
        return [_number(v) for v in (self.x0, self.y0, self.x1, self.y1)]

    def __str__(self) -> str:  # as typed on a command line: 10,20,300.5,240
        return ",".join(str(v) for v in self.to_list())


def _number(value: float) -> int | float:
    value = float(value)
    return int(value) if math.isfinite(value) and value.is_integer() else value


def box_window(box: Box | None) -> tuple[slice, slice]:
    """Row and column slices of a checked box (everything for None)."""
    if box is None:
        return slice(None), slice(None)
    return slice(int(box.y0), int(box.y1)), slice(int(box.x0), int(box.x1))
