"""Compute PDQ (with quality), MD5 and SHA-256 for images and sampled video frames.

PDQ comes from ``pdqhash`` (Python bindings of Meta's reference implementation);
its 256 bits are packed most significant bit first, Meta's hex convention. For an
image file, MD5/SHA-256 are digests of the file's bytes (what authority hash lists
hold); for a video frame, of its decoded RGB pixels.

What ``streamsafe hash`` prints and sends are ``livestream.frame-hashes`` messages, in
the contract's own field names (``seq``, ``ts_ms`` in epoch milliseconds), so its
output can be piped to a producer as it is.

With ``dihedral=True`` a frame's PDQ comes from ``pdqhash.compute_dihedral``: the eight
dihedral variants (rotations, flips) from one pass, the identity as ``pdq`` and the
other seven, by Meta's names, as ``pdq_dihedral`` (schema version 2 of the frame-hash
record); so a mirrored or turned copy of a known picture still matches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pdqhash
from PIL import Image

from streamsafe.matching.dihedral import VARIANTS

__all__ = ["DIHEDRAL_SCHEMA_VERSION", "MAX_FRAMES_PER_MESSAGE", "FrameHashes", "frame_hashes_messages",
           "hash_image_array", "hash_image_array_dihedral", "hash_image_file", "hash_path", "hash_video",
           "is_video", "pdq_hex", "stream_id_for"]

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".flv", ".ts", ".m4v"}

MAX_FRAMES_PER_MESSAGE = 64
"""The contract's ``maxItems`` for ``frames`` in one livestream.frame-hashes message."""

DIHEDRAL_SCHEMA_VERSION = 2
"""The livestream.frame-hashes schema version whose frames may carry ``pdq_dihedral``;
a message without it stays version 1, readable by every worker."""


@dataclass(frozen=True, slots=True)
class FrameHashes:
    path: str
    pdq: str
    pdq_quality: int
    md5: str
    sha256: str
    frame_ts_ms: int | None = None  # offset of a video frame from the start of the video
    frame_seq: int | None = None  # position among the video's sampled frames
    pdq_dihedral: Mapping[str, str] | None = None  # the other seven dihedral variants, by Meta's names

    def as_frame(self, seq: int, ts_ms: int) -> dict[str, Any]:
        """One entry of a livestream.frame-hashes message's ``frames``: ``seq`` within the
        stream, ``ts_ms`` the frame's epoch time (not the offset within its video)."""
        frame = {"seq": seq, "ts_ms": ts_ms, "pdq": self.pdq, "pdq_quality": self.pdq_quality,
                 "md5": self.md5, "sha256": self.sha256}
        if self.pdq_dihedral:
            frame["pdq_dihedral"] = dict(self.pdq_dihedral)
        return frame


def frame_hashes_messages(stream_id: str, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``frames`` (from ``FrameHashes.as_frame``) as livestream.frame-hashes messages of at
    most ``MAX_FRAMES_PER_MESSAGE`` frames each; a message whose frames carry dihedral
    variants is schema version 2, any other version 1."""
    chunks = [frames[i:i + MAX_FRAMES_PER_MESSAGE] for i in range(0, len(frames), MAX_FRAMES_PER_MESSAGE)]
    return [{"schema_version": DIHEDRAL_SCHEMA_VERSION if any("pdq_dihedral" in f for f in chunk) else 1,
             "stream_id": stream_id, "frames": chunk} for chunk in chunks]


def stream_id_for(path: Path) -> str:
    """A contract-valid stream id named after a file, for frames hashed without one."""
    name = re.sub(r"[^A-Za-z0-9._:@-]", "-", path.name)
    return (name if re.match(r"[A-Za-z0-9]", name) else "f" + name)[:128]


def pdq_hex(bits: np.ndarray) -> str:
    """Meta's hex form: bit 0 of the PDQ vector is the most significant bit."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hash_image_array(rgb: np.ndarray) -> tuple[str, int]:
    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb))
    return pdq_hex(bits), int(quality)


def hash_image_array_dihedral(rgb: np.ndarray) -> tuple[str, int, dict[str, str]]:
    """PDQ of the picture (identity), its quality, and the PDQ of its seven other dihedral
    variants by Meta's names: all eight from one pass of ``pdqhash.compute_dihedral``."""
    variants, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb))
    identity, *others = (pdq_hex(bits) for bits in variants)
    return identity, int(quality), dict(zip(VARIANTS, others, strict=True))


def _pdq(rgb: np.ndarray, dihedral: bool) -> tuple[str, int, dict[str, str] | None]:
    if dihedral:
        return hash_image_array_dihedral(rgb)
    return (*hash_image_array(rgb), None)


def hash_image_file(path: Path, dihedral: bool = False) -> FrameHashes:
    data = path.read_bytes()
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    pdq, quality, variants = _pdq(rgb, dihedral)
    return FrameHashes(str(path), pdq, quality, hashlib.md5(data).hexdigest(),
                       hashlib.sha256(data).hexdigest(), pdq_dihedral=variants)


def hash_video(path: Path, fps: float = 1.0, dihedral: bool = False) -> Iterator[FrameHashes]:
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
            pdq, quality, variants = _pdq(rgb, dihedral)
            raw = rgb.tobytes()
            yield FrameHashes(str(path), pdq, quality, hashlib.md5(raw).hexdigest(),
                              hashlib.sha256(raw).hexdigest(), int(at * 1000), seq, variants)
            seq += 1
            while next_mark <= at:
                next_mark += step


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def hash_path(path: Path, fps: float = 1.0, dihedral: bool = False) -> Iterator[FrameHashes]:
    if is_video(path):
        yield from hash_video(path, fps, dihedral)
    else:
        yield hash_image_file(path, dihedral)
