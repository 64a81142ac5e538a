"""Hash banks: named lists of known hashes, indexed for lookup by frame.

This slice holds exact digests (MD5, SHA-256) in hash tables: one dict lookup
per digest per frame. Entry ids, not hash values, identify what matched, so
decisions and logs never carry bank contents.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from streamsafe.errors import BankError
from streamsafe.events.models import Frame
from streamsafe.matching.signal_types import SignalTypeRegistry, default_registry

__all__ = ["BankEntry", "HashBanks", "HashListProblem", "Match", "read_hash_list"]

_EXACT_BY_LENGTH = {32: "md5", 64: "sha256"}


@dataclass(frozen=True, slots=True)
class BankEntry:
    entry_id: str
    bank: str
    signal_type: str
    hash: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """One frame matched one bank entry."""

    bank: str
    entry_id: str
    signal_type: str
    distance: int
    frame_seq: int
    frame_ts_ms: int
    quality: int | None = None


@dataclass(frozen=True, slots=True)
class HashListProblem:
    line: int
    reason: str


class HashBanks:
    """Every bank's exact digests, by signal type and hash."""

    def __init__(self, registry: SignalTypeRegistry | None = None) -> None:
        self.registry = registry or default_registry()
        self._exact: dict[str, dict[str, list[BankEntry]]] = defaultdict(dict)
        self._sizes: dict[str, int] = defaultdict(int)

    def add(self, entry: BankEntry) -> None:
        canonical = self.registry.get(entry.signal_type).validate(entry.hash)
        bucket = self._exact[entry.signal_type].setdefault(canonical, [])
        if all(e.entry_id != entry.entry_id for e in bucket):
            bucket.append(entry)
            self._sizes[entry.bank] += 1

    def add_all(self, entries: Iterable[BankEntry]) -> None:
        for entry in entries:
            self.add(entry)

    def sizes(self) -> dict[str, int]:
        """Entries per bank."""
        return dict(self._sizes)

    def __len__(self) -> int:
        return sum(self._sizes.values())

    def match_frame(self, frame: Frame) -> list[Match]:
        """Every bank entry this frame's exact digests hit."""
        matches: list[Match] = []
        for signal_type, digest in (("md5", frame.md5), ("sha256", frame.sha256)):
            if digest is None:
                continue
            for entry in self._exact[signal_type].get(digest, ()):
                matches.append(
                    Match(entry.bank, entry.entry_id, signal_type, 0, frame.seq, frame.ts_ms)
                )
        return matches


def read_hash_list(
    path: Path, bank: str | None = None, registry: SignalTypeRegistry | None = None
) -> tuple[list[BankEntry], list[HashListProblem]]:
    """Read a hash list: one hash per line, ``TYPE:HEX`` or bare hex (32 hex = MD5,
    64 hex = SHA-256), an optional label after whitespace, ``#`` comments.

    Bad lines are returned as problems with their line numbers, never dropped silently.
    The bank is named after the file unless ``bank`` is given.
    """
    registry = registry or default_registry()
    bank = bank or path.stem
    entries: list[BankEntry] = []
    problems: list[HashListProblem] = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BankError(f"cannot read hash list {path}: {exc}") from exc
    for number, line in _numbered(lines):
        token, _, label = line.partition(" ")
        type_name, sep, value = token.partition(":")
        if not sep:
            value = type_name
            if len(value) not in _EXACT_BY_LENGTH:
                problems.append(HashListProblem(number, "bare hash is not 32 (MD5) or 64 (SHA-256) hex"))
                continue
            type_name = _EXACT_BY_LENGTH[len(value)]
        try:
            canonical = registry.get(type_name).validate(value)
        except (KeyError, ValueError) as exc:
            problems.append(HashListProblem(number, str(exc).strip("'\"") or "unrecognised hash"))
            continue
        entries.append(BankEntry(f"{bank}:{number}", bank, type_name, canonical, label.strip() or None))
    return entries, problems


def _numbered(lines: list[str]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line
