"""Read camera messages straight from their serialized (CDR) bytes, without ROS.

A 30 Hz camera gives the node three times the frames it keeps, and a 1080p frame is 6 MB: turning
every message into a Python object costs more than a 2-core vehicle has. The node therefore
subscribes to the serialized bytes, reads the header stamp (8 bytes at a fixed offset) to let
the sampler decide, and only for a frame it takes reads the other fields and views the pixels
with numpy, without copying (``image_fields``, ``compressed_fields``).

Layout (XCDR1, as rmw_fastrtps / rmw_cyclonedds write it): a 4-byte encapsulation header (the
second byte says little- or big-endian), then the fields in order, each aligned to its own size
counted from the end of that header; a string is a uint32 length (with the trailing NUL) and
its bytes; a uint8[] is a uint32 length and its bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from spartan_ros.ingest.images import ImageError

_HEADER = 4  # encapsulation: 0x00 0x00 = CDR big-endian, 0x00 0x01 = CDR little-endian
_ENDIAN = {0: ">", 1: "<"}


@dataclass(frozen=True)
class ImageFields:
    """What ``images.image_view`` reads of a sensor_msgs/Image (``data`` is a view)."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass(frozen=True)
class CompressedFields:
    stamp_ns: int
    frame_id: str
    format: str
    data: memoryview


class _Reader:
    """Sequential reads with CDR alignment; ImageError when the bytes end early."""

    def __init__(self, raw: bytes | bytearray | memoryview) -> None:
        self.buf = memoryview(raw).cast("B")
        if len(self.buf) < _HEADER + 8 or self.buf[0] != 0 or self.buf[1] not in _ENDIAN:
            raise ImageError("not a CDR message with a header stamp")
        self.order = _ENDIAN[self.buf[1]]
        self.pos = _HEADER

    def _need(self, size: int, what: str) -> None:
        if self.pos + size > len(self.buf):
            raise ImageError(f"message ends inside its {what} ({len(self.buf)} bytes)")

    def u32(self, what: str) -> int:
        self.pos += -(self.pos - _HEADER) % 4
        self._need(4, what)
        (value,) = struct.unpack_from(self.order + "I", self.buf, self.pos)
        self.pos += 4
        return int(value)

    def i32(self, what: str) -> int:
        value = self.u32(what)
        return value - (1 << 32) if value >= 1 << 31 else value

    def u8(self, what: str) -> int:
        self._need(1, what)
        self.pos += 1
        return int(self.buf[self.pos - 1])

    def octets(self, what: str) -> memoryview:
        size = self.u32(what)
        self._need(size, what)
        self.pos += size
        return self.buf[self.pos - size : self.pos]

    def string(self, what: str) -> str:
        text = bytes(self.octets(what))
        return text[:-1].decode("utf-8", "replace") if text.endswith(b"\0") else text.decode(
            "utf-8", "replace")

    def stamp_ns(self) -> int:
        sec = self.i32("stamp")
        return sec * 1_000_000_000 + self.u32("stamp")


def stamp_ns(raw: bytes | bytearray | memoryview) -> int:
    """The header stamp (ns) of a serialized message whose first field is a std_msgs/Header."""
    return _Reader(raw).stamp_ns()


def image_fields(raw: bytes | bytearray | memoryview) -> ImageFields:
    """The fields of a serialized sensor_msgs/Image; ``data`` views ``raw`` (keep it alive)."""
    r = _Reader(raw)
    stamp = r.stamp_ns()
    frame_id = r.string("frame_id")
    height, width = r.u32("height"), r.u32("width")
    encoding = r.string("encoding")
    bigendian = r.u8("is_bigendian")
    step = r.u32("step")
    data = r.octets("data")
    return ImageFields(stamp, frame_id, height, width, encoding, bigendian, step, data)


def compressed_fields(raw: bytes | bytearray | memoryview) -> CompressedFields:
    """The fields of a serialized sensor_msgs/CompressedImage; ``data`` views ``raw``."""
    r = _Reader(raw)
    stamp = r.stamp_ns()
    frame_id = r.string("frame_id")
    fmt = r.string("format")
    return CompressedFields(stamp, frame_id, fmt, r.octets("data"))


def pixels_view(raw: bytes | bytearray | memoryview) -> np.ndarray:
    """uint8 view of a serialized Image's pixel bytes (for tests and tools)."""
    return np.frombuffer(image_fields(raw).data, dtype=np.uint8)
