"""Read a PNG's pixels with zlib and numpy, for tests that look at screenshots.

Pillow is not a dependency of synthkd, and a screenshot test needs only this: 8-bit RGB or RGBA,
not interlaced (what Chromium writes). The five row filters of the PNG format are undone row by
row: None, Sub and Up with numpy, Average and Paeth (which depend on the byte to their left) in a
loop over the row's bytes.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

CHANNELS = {2: 3, 6: 4}  # colour type: RGB, RGBA


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    to_left, to_up, to_corner = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    if to_left <= to_up and to_left <= to_corner:
        return left
    return up if to_up <= to_corner else corner


def _unfilter(kind: int, line: np.ndarray, previous: np.ndarray, step: int) -> np.ndarray:
    if kind == 0:
        return line
    if kind == 2:
        return (line.astype(np.uint16) + previous).astype(np.uint8)
    if kind == 1:  # each byte adds the one `step` to its left: a running sum per channel
        lanes = line.reshape(-1, step).astype(np.int64)
        return (np.cumsum(lanes, axis=0) % 256).astype(np.uint8).reshape(-1)
    out = bytearray(line.tobytes())
    up = previous.tobytes()
    for i in range(len(out)):
        left = out[i - step] if i >= step else 0
        if kind == 3:
            out[i] = (out[i] + (left + up[i]) // 2) & 0xFF
        else:
            corner = up[i - step] if i >= step else 0
            out[i] = (out[i] + _paeth(left, up[i], corner)) & 0xFF
    return np.frombuffer(bytes(out), dtype=np.uint8)


def read_png(path: Path) -> np.ndarray:
    """The image as an array of shape (height, width, 3): RGB, any alpha channel dropped."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    position, compressed = 8, bytearray()
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in CHANNELS and not interlace, f"unsupported PNG: {path}"
        elif kind == b"IDAT":
            compressed += body
    step = CHANNELS[colour]
    stride = width * step
    raw = np.frombuffer(zlib.decompress(bytes(compressed)), dtype=np.uint8).reshape(height, stride + 1)
    rows = np.empty((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        previous = rows[y] = _unfilter(int(raw[y, 0]), raw[y, 1:], previous, step)
    return rows.reshape(height, width, step)[:, :, :3]


def share_of_colour(pixels: np.ndarray, hex_colour: str, tolerance: int = 6) -> float:
    """The share of pixels within `tolerance` (per channel) of `hex_colour` (#rrggbb)."""
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    close = np.all(np.abs(pixels.astype(np.int16) - target) <= tolerance, axis=-1)
    return float(close.mean())
