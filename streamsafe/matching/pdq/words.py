"""PDQ hashes as ``uint64[n, 4]`` words: parsing, printing, distances, aligned storage.

Hash convention: 64 hex characters, most significant bit first (Meta's ``Hash256``
hex; ``pdqhash.compute`` returns its bit vector in the same order). Internally a hash
is ``uint64[4]``, word 0 holding hex characters 0-15, so bit 0 in Meta's MSB-first
numbering is the top bit of word 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "PDQ_CONFIDENT_MATCH_THRESHOLD",
    "HashInput",
    "WordArray",
    "aligned_rows",
    "bits_to_words",
    "brute_force",
    "bytes_to_words",
    "hamming",
    "hex_to_words",
    "one_hex",
    "to_words",
    "words_to_hex",
]

PDQ_CONFIDENT_MATCH_THRESHOLD = 31
"""Meta's recommended PDQ match threshold; the default and maximum lookup radius."""

_CACHE_LINE = 64

WordArray = npt.NDArray[np.uint64]
HashInput = str | bytes | Sequence[str] | npt.NDArray[np.uint64] | npt.NDArray[np.uint8]


def hex_to_words(hexes: str | Iterable[str]) -> WordArray:
    """Parse PDQ hex strings (64 hex chars, MSB first) into a ``uint64[n, 4]`` array.

    Raises ``ValueError`` for anything that is not exactly 64 hex characters.
    """
    items = [hexes] if isinstance(hexes, str) else list(hexes)
    for item in items:
        if len(item) != 64:
            raise ValueError(f"a PDQ hash is 64 hex characters, got {len(item)}: {item[:80]!r}")
    try:
        raw = bytes.fromhex("".join(items))
    except ValueError as exc:
        raise ValueError(f"PDQ hash is not hex: {exc}") from None
    if len(raw) != 32 * len(items):  # fromhex skips whitespace; a 64-char item with spaces is short
        raise ValueError("a PDQ hash contains whitespace")
    return bytes_to_words(raw)


def one_hex(text: str) -> WordArray:
    """``hex_to_words`` for one string, on the per-frame lookup path (~1 us)."""
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        return hex_to_words(text)  # raises the detailed error
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(1, 4)


def bytes_to_words(raw: bytes | npt.NDArray[np.uint8]) -> WordArray:
    """Raw 32-byte digests (big-endian, as ``bytes.fromhex(hex)``) to ``uint64[n, 4]``."""
    buf = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes | bytearray | memoryview) else raw
    buf = np.ascontiguousarray(buf, dtype=np.uint8).reshape(-1)
    if buf.size % 32:
        raise ValueError(f"raw PDQ hashes are 32 bytes each, got {buf.size} bytes")
    return buf.view(">u8").reshape(-1, 4).astype(np.uint64)


def words_to_hex(words: WordArray) -> list[str]:
    """``uint64[n, 4]`` back to Meta-convention hex strings."""
    raw = np.ascontiguousarray(np.asarray(words, dtype=np.uint64).reshape(-1, 4)).astype(">u8").tobytes()
    return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]


def bits_to_words(bits: npt.ArrayLike) -> WordArray:
    """A 256-element 0/1 vector in MSB-first order (as ``pdqhash.compute`` returns it)
    to ``uint64[1, 4]``; a ``[n, 256]`` matrix gives ``uint64[n, 4]``."""
    arr = np.asarray(bits)
    if arr.shape[-1] != 256:
        raise ValueError(f"a PDQ bit vector has 256 elements, got shape {arr.shape}")
    packed = np.packbits(arr.reshape(-1, 256).astype(bool), axis=1)
    return bytes_to_words(packed)


def to_words(hashes: HashInput) -> WordArray:
    """Normalise any accepted hash input to a C-contiguous ``uint64[n, 4]`` array.

    Accepts one hex string, a sequence of hex strings, raw bytes (32 per hash),
    ``uint8[n, 32]`` digests or ``uint64[n, 4]`` / ``uint64[4]`` words.
    """
    if isinstance(hashes, str):
        return hex_to_words(hashes)
    if isinstance(hashes, bytes | bytearray | memoryview):
        return bytes_to_words(bytes(hashes))
    if isinstance(hashes, np.ndarray):
        if hashes.dtype == np.uint8:
            return bytes_to_words(hashes.view(np.uint8))
        if hashes.dtype in (np.uint64, np.int64):
            if hashes.shape[-1] != 4:
                raise ValueError(f"word arrays must have shape [n, 4], got {hashes.shape}")
            return np.ascontiguousarray(hashes.reshape(-1, 4).view(np.uint64))
        raise ValueError(f"unsupported hash array dtype {hashes.dtype}")
    return hex_to_words(hashes)


def hamming(a: HashInput, b: HashInput) -> npt.NDArray[np.int64]:
    """Element-wise Hamming distance between two equally long (or broadcastable) hash sets."""
    x = np.bitwise_xor(to_words(a), to_words(b))
    return np.bitwise_count(x).sum(axis=1, dtype=np.int64)


def brute_force(bank: WordArray, query: WordArray, radius: int) -> tuple[npt.NDArray[np.int64], ...]:
    """Reference exact search: rows of ``bank`` within ``radius`` of ``query`` (one
    hash), as ``(rows, distances)``. Used by tests and benchmarks to check the index."""
    d = np.bitwise_count(np.bitwise_xor(bank, query.reshape(1, 4))).sum(axis=1, dtype=np.int64)
    rows = np.flatnonzero(d <= radius)
    return rows, d[rows]


def aligned_rows(n: int) -> WordArray:
    """``uint64[n, 4]`` starting on a cache line, so that no 32-byte row straddles two."""
    buf = np.empty(n * 32 + _CACHE_LINE, dtype=np.uint8)
    skip = (-buf.ctypes.data) % _CACHE_LINE
    return buf[skip : skip + n * 32].view(np.uint64).reshape(n, 4)
