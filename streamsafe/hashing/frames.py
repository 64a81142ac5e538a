"""Compute PDQ (with quality), MD5 and SHA-256 for images and sampled video frames.

PDQ comes from ``pdqhash`` (Python bindings of Meta's reference implementation);
its 256 bits are packed most significant bit first, Meta's hex convention. For an
image file, MD5/SHA-256 are digests of the file's bytes (what authority hash lists
hold); for a video frame, of its decoded RGB pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pdqhash
from PIL import Image

__all__ = ["FrameHashes", "hash_image_array", "hash_image_file", "hash_path", "hash_video",
           "is_video", "pdq_hex"]

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".m4v"}


@dataclass(frozen=True, slots=True)
class FrameHashes:
    path: str
    pdq: str
    pdq_quality: int
    md5: str
    sha256: str
    frame_ts_ms: int | None = None  # offset of a video frame from the start of the video
    frame_seq: int | None = None

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"path": self.path, "pdq": self.pdq, "pdq_quality": self.pdq_quality,
                                  "md5": self.md5, "sha256": self.sha256}
        if self.frame_ts_ms is not None:
            record["frame_ts"] = self.frame_ts_ms
            record["frame_seq"] = self.frame_seq
        return record


def pdq_hex(bits: np.ndarray) -> str:
    """Meta's hex form: bit 0 of the PDQ vector is the most significant bit."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hash_image_array(rgb: np.ndarray) -> tuple[str, int]:
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return pdq_hex(bits), int(quality)


def hash_image_file(path: Path) -> FrameHashes:
    data = path.read_bytes()
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    pdq, quality = hash_image_array(rgb)
    return FrameHashes(str(path), pdq, quality, hashlib.md5(data).hexdigest(),
                       hashlib.sha256(data).hexdigest())


def hash_video(path: Path, fps: float = 1.0) -> Iterator[FrameHashes]:
    """One frame per ``1/fps`` seconds of video time (the first frame at or after each mark)."""
    import av

    step = Fraction(1) / Fraction(fps).limit_denominator(1000)
    next_mark = Fraction(0)
    seq = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                continue
            at = Fraction(frame.pts) * frame.time_base
            if at < next_mark:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            pdq, quality = hash_image_array(rgb)
            raw = rgb.tobytes()
            yield FrameHashes(str(path), pdq, quality, hashlib.md5(raw).hexdigest(),
                              hashlib.sha256(raw).hexdigest(), int(at * 1000), seq)
            seq += 1
            while next_mark <= at:
                next_mark += step


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def hash_path(path: Path, fps: float = 1.0) -> Iterator[FrameHashes]:
    if is_video(path):
        yield from hash_video(path, fps)
    else:
        yield hash_image_file(path)
