"""Signal types: how a kind of hash is named, validated and compared.

Exact digests (MD5, SHA-256) compare by equality; perceptual hashes plug in
behind the same interface with a distance. The registry refuses a second type
with a name already taken, at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Protocol

__all__ = [
    "MD5",
    "PDQ",
    "SHA256",
    "Comparison",
    "ExactDigest",
    "SignalType",
    "SignalTypeRegistry",
    "default_registry",
]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing two hashes of one signal type."""

    matched: bool
    distance: int

    @classmethod
    def from_distance(cls, distance: int, threshold: int) -> Comparison:
        return cls(distance <= threshold, distance)

    @classmethod
    def from_equality(cls, equal: bool) -> Comparison:
        return cls(equal, 0 if equal else 1)


class SignalType(Protocol):
    name: ClassVar[str]

    def validate(self, value: str) -> str:
        """Return the canonical form of ``value`` or raise ``ValueError``."""
        ...

    def compare(self, a: str, b: str) -> Comparison: ...


class ExactDigest:
    """A cryptographic digest: lower-case hex of a fixed length, equal or not."""

    name: ClassVar[str]
    hex_length: ClassVar[int]

    def validate(self, value: str) -> str:
        canonical = value.strip().lower()
        if not re.fullmatch(f"[0-9a-f]{{{self.hex_length}}}", canonical):
            raise ValueError(f"{self.name} must be {self.hex_length} hex characters")
        return canonical

    def compare(self, a: str, b: str) -> Comparison:
        return Comparison.from_equality(a == b)


class MD5(ExactDigest):
    name = "md5"
    hex_length = 32


class SHA256(ExactDigest):
    name = "sha256"
    hex_length = 64


class PDQ:
    """Meta's PDQ perceptual hash: 256 bits as 64 hex characters, most significant bit
    first. Two hashes match when their Hamming distance is at most the threshold
    (31 is Meta's confident-match threshold)."""

    name: ClassVar[str] = "pdq"
    threshold: ClassVar[int] = 31
    #: frames whose PDQ quality is below this are not matched (Meta's recommendation)
    min_quality: ClassVar[int] = 50

    def validate(self, value: str) -> str:
        canonical = value.strip().lower()
        if not re.fullmatch("[0-9a-f]{64}", canonical):
            raise ValueError("pdq must be 64 hex characters")
        return canonical

    def distance(self, a: str, b: str) -> int:
        return (int(a, 16) ^ int(b, 16)).bit_count()

    def compare(self, a: str, b: str) -> Comparison:
        return Comparison.from_distance(self.distance(a, b), self.threshold)


class SignalTypeRegistry:
    """Signal types by name; a duplicate name is a programming error caught at start-up."""

    def __init__(self, *types: SignalType) -> None:
        self._types: dict[str, SignalType] = {}
        for signal_type in types:
            self.register(signal_type)

    def register(self, signal_type: SignalType) -> None:
        if signal_type.name in self._types:
            raise ValueError(f"signal type {signal_type.name!r} is already registered")
        self._types[signal_type.name] = signal_type

    def get(self, name: str) -> SignalType:
        try:
            return self._types[name]
        except KeyError:
            raise KeyError(f"unknown signal type {name!r}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._types)


def default_registry() -> SignalTypeRegistry:
    return SignalTypeRegistry(PDQ(), MD5(), SHA256())
