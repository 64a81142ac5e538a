"""Hash banks: named lists of known hashes, indexed for lookup by frame.

Entries arrive one by one or in bulk (from ``hashbank.entries`` or a hash list);
each gets an integer slot. Exact digests (MD5, SHA-256) are looked up in a hash
table; PDQ hashes in an exact Hamming-radius index that takes additions and
removals without a rebuild. Entry ids, not hash values, identify what matched,
so decisions and logs never carry bank contents.

A frame that carries its dihedral PDQ variants (``pdq_dihedral``: rotated and flipped
copies, see :mod:`.dihedral`) has them looked up in the same index call as every
other hash of the batch; a variant's match counts for a bank only when the caller's
``transforms_of(bank)`` names the transform under which the frame shows the entry's
picture, and a frame matches an entry once, through its closest hash.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamsafe.errors import BankError
from streamsafe.events.models import BankEntry, Frame, Match
from streamsafe.matching.dihedral import VARIANTS, shown_as
from streamsafe.matching.pdq import PDQIndex
from streamsafe.matching.signal_types import PDQ, SignalTypeRegistry, default_registry

__all__ = ["HashBanks", "HashListProblem", "read_hash_list"]

_EXACT_BY_LENGTH = {32: "md5", 64: "sha256"}
_TYPES = ("pdq", "md5", "sha256")
_RANK = {None: 0} | {t: i for i, t in enumerate(VARIANTS, start=1)}  # ties: the frame as it is, then Meta's order

TransformsOf = Callable[[str], frozenset[str]]
"""A bank's name -> the transforms (:data:`.dihedral.TRANSFORMS`) under which a frame
showing one of its pictures counts as a match."""


@dataclass(frozen=True, slots=True)
class HashListProblem:
    line: int
    reason: str


class HashBanks:
    """Every bank's entries, by signal type. Not thread-safe for writers: one task
    applies updates, any number read (PDQ lookups release the GIL)."""

    def __init__(self, registry: SignalTypeRegistry | None = None, *,
                 pdq_radius: int = PDQ.threshold, pdq_min_quality: int = PDQ.min_quality,
                 bank_radius: Mapping[str, int] | None = None) -> None:
        self.registry = registry or default_registry()
        self.pdq_radius = pdq_radius
        self.pdq_min_quality = pdq_min_quality
        self.bank_radius = dict(bank_radius or {})
        self._slot_of: dict[str, int] = {}
        self._entry_ids: list[str | None] = []
        self._bank_code = array("H")
        self._type_code = array("B")
        self._banks: list[str] = []
        self._bank_index: dict[str, int] = {}
        self._exact: dict[str, dict[str, list[int]]] = {"md5": {}, "sha256": {}}
        self._exact_hash: dict[int, str] = {}
        self._pdq = PDQIndex(max_radius=max(PDQ.threshold, pdq_radius, *self.bank_radius.values(), 0))
        self._sizes: Counter[tuple[str, str]] = Counter()
        #: when the banks' content last changed, by the entries' own times (epoch seconds): an entry
        #: new to the banks counts at its ``added_ms``, a removal at its time; a restart that reloads
        #: the same entries, or a re-import of identical ones, leaves it where it was
        self.updated_at: float | None = None

    # -- updates ------------------------------------------------------------------

    def _bank_code_of(self, bank: str) -> int:
        code = self._bank_index.get(bank)
        if code is None:
            code = self._bank_index[bank] = len(self._banks)
            self._banks.append(bank)
        return code

    def add(self, entry: BankEntry) -> None:
        self.add_many([entry])

    def add_many(self, entries: Iterable[BankEntry]) -> int:
        """Add (or replace, by entry id) entries; PDQ hashes go to the index in one batch."""
        pdq_slots: list[int] = []
        pdq_hashes: list[str] = []
        added = 0
        changed_at: float | None = None
        for entry in entries:
            canonical = self.registry.get(entry.signal_type).validate(entry.hash)
            if entry.entry_id in self._slot_of:
                self.remove(entry.entry_id, changed=False)
            else:
                at = entry.added_ms / 1000 if entry.added_ms is not None else time.time()
                changed_at = at if changed_at is None else max(changed_at, at)
            slot = len(self._entry_ids)
            self._slot_of[entry.entry_id] = slot
            self._entry_ids.append(entry.entry_id)
            self._bank_code.append(self._bank_code_of(entry.bank))
            self._type_code.append(_TYPES.index(entry.signal_type))
            if entry.signal_type == "pdq":
                pdq_slots.append(slot)
                pdq_hashes.append(canonical)
            else:
                self._exact[entry.signal_type].setdefault(canonical, []).append(slot)
                self._exact_hash[slot] = canonical
            self._sizes[(entry.bank, entry.signal_type)] += 1
            added += 1
        if pdq_slots:
            self._pdq.add_many(pdq_slots, pdq_hashes)
        if changed_at is not None:
            self._changed(changed_at)
        return added

    def _changed(self, at: float) -> None:
        self.updated_at = at if self.updated_at is None else max(self.updated_at, at)

    def remove(self, entry_id: str, at: float | None = None, *, changed: bool = True) -> bool:
        """Remove an entry; ``at``: when it was removed (epoch seconds; default now)."""
        slot = self._slot_of.pop(entry_id, None)
        if slot is None:
            return False
        signal_type = _TYPES[self._type_code[slot]]
        if signal_type == "pdq":
            self._pdq.remove(slot)
        else:
            digest = self._exact_hash.pop(slot)
            bucket = self._exact[signal_type][digest]
            bucket.remove(slot)
            if not bucket:
                del self._exact[signal_type][digest]
        self._entry_ids[slot] = None
        self._sizes[(self._banks[self._bank_code[slot]], signal_type)] -= 1
        if changed:
            self._changed(time.time() if at is None else at)
        return True

    def settle(self) -> None:
        """Fold every PDQ addition so far into the static index: once the banks are loaded,
        before the first frame is matched, since every lookup scans the whole delta (a
        bank loaded in batches leaves up to ``max_delta`` rows there)."""
        if self._pdq.delta_size:
            self._pdq.compact()

    def compact_if_needed(self) -> bool:
        """Fold recent PDQ additions into the static index when the delta grows large;
        meant to be called off the hot path."""
        if self._pdq.needs_compaction:
            self._pdq.compact()
            return True
        return False

    # -- reading ------------------------------------------------------------------

    def sizes(self) -> dict[str, dict[str, int]]:
        """Live entries per bank and signal type."""
        out: dict[str, dict[str, int]] = {}
        for (bank, signal_type), count in sorted(self._sizes.items()):
            if count:
                out.setdefault(bank, {})[signal_type] = count
        return out

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._slot_of

    def _match(self, slot: int, signal_type: str, distance: int, frame: Frame,
               transform: str | None = None) -> Match | None:
        entry_id = self._entry_ids[slot]
        if entry_id is None:
            return None
        bank = self._banks[self._bank_code[slot]]
        if signal_type == "pdq" and distance > self.bank_radius.get(bank, self.pdq_radius):
            return None
        return Match(bank, entry_id, signal_type, distance, frame.seq, frame.ts_ms,
                     frame.pdq_quality if signal_type == "pdq" else None, transform)

    def match_frame(self, frame: Frame, transforms_of: TransformsOf | None = None) -> list[Match]:
        """Every bank entry this frame hits: exact digests by equality, PDQ within the
        radius (per-bank override), frames below the PDQ quality floor skipped."""
        return self.match_frames([frame], transforms_of)

    def match_frames(self, frames: Sequence[Frame], transforms_of: TransformsOf | None = None) -> list[Match]:
        """Frames arriving together are matched as one PDQ batch."""
        return self.match_frame_groups([frames], transforms_of)[0]

    def match_frame_groups(self, groups: Sequence[Sequence[Frame]],
                           transforms_of: TransformsOf | None = None) -> list[list[Match]]:
        """The matches of each group of frames (e.g. each message of a consumer batch),
        with every PDQ hash of every group looked up in one index call: dihedral variants
        too, where a frame carries them and ``transforms_of`` (None: no bank) counts them."""
        matches: list[list[Match]] = [[] for _ in groups]
        queried: list[tuple[int, Frame, str | None, int]] = []  # group, frame, variant, the frame's first query
        hashes: list[str] = []
        floor = self.pdq_min_quality
        with_pdq = len(self._pdq) > 0
        counted: list[frozenset[str]] = []  # per bank code: the variants whose matches count
        probed: frozenset[str] | None = None
        for g, frames in enumerate(groups):
            for frame in frames:
                for signal_type, digest in (("md5", frame.md5), ("sha256", frame.sha256)):
                    if digest is not None:
                        for slot in self._exact[signal_type].get(digest, ()):
                            if (m := self._match(slot, signal_type, 0, frame)) is not None:
                                matches[g].append(m)
                if with_pdq and frame.pdq is not None and (frame.pdq_quality or 0) >= floor:
                    first = len(queried)
                    queried.append((g, frame, None, first))
                    hashes.append(frame.pdq)
                    if frame.pdq_dihedral and transforms_of is not None:
                        if probed is None:
                            counted = self._variants_counted(transforms_of)
                            probed = frozenset().union(*counted)
                        for variant, digest in frame.pdq_dihedral.items():
                            if variant in probed:
                                queried.append((g, frame, variant, first))
                                hashes.append(digest)
        if not queried:
            return matches
        found = self._pdq.query_batch(hashes, self._pdq_max())
        if probed is None:  # no variants: each frame's matches in index order, as they come
            for i, slot, distance in found:
                g, frame, _, _ = queried[i]
                if (m := self._match(slot, "pdq", distance, frame)) is not None:
                    matches[g].append(m)
            return matches
        at: dict[tuple[int, int], int] = {}  # (frame's first query, slot) -> where its match is in its group
        for i, slot, distance in found:
            g, frame, variant, first = queried[i]
            if variant is not None and variant not in counted[self._bank_code[slot]]:
                continue
            m = self._match(slot, "pdq", distance, frame, None if variant is None else shown_as(variant))
            if m is None:
                continue
            key = (first, slot)
            if key not in at:
                at[key] = len(matches[g])
                matches[g].append(m)
            elif _closeness(m) < _closeness(matches[g][at[key]]):
                matches[g][at[key]] = m  # one match per frame and entry: the closest hash
        return matches

    def _variants_counted(self, transforms_of: TransformsOf) -> list[frozenset[str]]:
        """Per bank code, the variants of a frame whose matches count for that bank."""
        return [frozenset(v for v in VARIANTS if shown_as(v) in transforms_of(bank)) for bank in self._banks]

    def _pdq_max(self) -> int:
        return max(self.pdq_radius, *self.bank_radius.values(), 0)


def _closeness(m: Match) -> tuple[int, int]:
    return m.distance, _RANK[m.transform]


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
        added_ms = int(path.stat().st_mtime * 1000)  # the list's entries are as old as the file
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
        entries.append(BankEntry(f"{bank}:{number}", bank, type_name, canonical, label.strip() or None,
                                 added_ms=added_ms))
    return entries, problems


def _numbered(lines: list[str]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line
