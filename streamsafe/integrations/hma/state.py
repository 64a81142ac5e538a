"""What the sync knows of HMA, and which ``hashbank.entries`` changes follow from a change there.

Pure and incremental: one HMA content item holds at most one signal per type (``content_signal``'s
key is content id + type), each such row becomes the StreamSafe entry of (mapped bank, type, hash),
and an entry lives while at least one *enabled* row holds it (two HMA items with the same hash
in banks mapped to one StreamSafe bank are one entry; deleting one of them keeps it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streamsafe.events.bank_entries import entry_id_for
from streamsafe.events.models import BankEntry
from streamsafe.integrations.hma.mapping import HMA_SIGNAL_TYPES, BankMapping

__all__ = ["Changes", "Row", "RowKey", "SyncState"]

_HEX = {"pdq": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}

RowKey = tuple[int, str]  # content id, HMA signal type


@dataclass(frozen=True, slots=True)
class Row:
    """One ``content_signal`` row of a mapped bank."""

    content_id: int
    hma_signal_type: str
    hma_bank: str
    value: str
    created_ms: int

    @property
    def key(self) -> RowKey:
        return self.content_id, self.hma_signal_type


@dataclass
class Changes:
    """Entries to publish and entry ids to remove, pending until the broker has them."""

    publish: dict[str, tuple[BankEntry, str]] = field(default_factory=dict)  # entry, its source
    remove: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.publish or self.remove)

    def clear(self) -> None:
        self.publish.clear()
        self.remove.clear()


class SyncState:
    def __init__(self, mapping: BankMapping) -> None:
        self.mapping = mapping
        self.rows: dict[RowKey, Row] = {}
        self._by_content: dict[int, list[RowKey]] = {}
        self._totals: dict[str, tuple[int, int]] = {}
        self.disabled: set[int] = set()
        #: newest ``content_signal.create_time`` seen: the next poll reads from shortly before it
        self.cursor: datetime | None = None
        self.holders: dict[str, set[RowKey]] = {}
        self.entries: dict[str, BankEntry] = {}  # the live entries, as published
        self.changes = Changes()
        self.unusable = 0  # rows whose hash StreamSafe cannot take (never expected from HMA)

    # -- what an HMA row means in StreamSafe -------------------------------------------------

    def entry_of(self, row: Row) -> BankEntry | None:
        mapped = self.mapping.of(row.hma_bank)
        signal_type = HMA_SIGNAL_TYPES.get(row.hma_signal_type)
        if mapped is None or signal_type is None:
            return None
        value = row.value.strip().lower()
        if not _HEX[signal_type].fullmatch(value):
            return None
        return BankEntry(entry_id_for(mapped.bank, signal_type, value), mapped.bank, signal_type, value,
                         f"hma {row.hma_bank} content {row.content_id}", None, row.created_ms)

    def _hold(self, row: Row) -> None:
        entry = self.entry_of(row)
        if entry is None:
            self.unusable += 1
            return
        holders = self.holders.setdefault(entry.entry_id, set())
        holders.add(row.key)
        if len(holders) == 1:
            self.entries[entry.entry_id] = entry
            self.changes.publish[entry.entry_id] = (entry, f"hma:{row.hma_bank}"[:128])
            self.changes.remove.discard(entry.entry_id)

    def _release(self, row: Row) -> None:
        entry = self.entry_of(row)
        if entry is None:
            return
        holders = self.holders.get(entry.entry_id)
        if holders is None:
            return
        holders.discard(row.key)
        if not holders:
            del self.holders[entry.entry_id]
            self.entries.pop(entry.entry_id, None)
            self.changes.publish.pop(entry.entry_id, None)
            self.changes.remove.add(entry.entry_id)

    # -- changes seen in HMA ------------------------------------------------------------------

    def add_rows(self, rows: Iterable[Row]) -> int:
        """Rows read from HMA; rows already known are left as they are. Returns the new ones."""
        new = 0
        for row in rows:
            if row.key in self.rows or self.mapping.of(row.hma_bank) is None:
                continue
            self.rows[row.key] = row
            self._by_content.setdefault(row.content_id, []).append(row.key)
            count, total = self._totals.get(row.hma_bank, (0, 0))
            self._totals[row.hma_bank] = (count + 1, total + row.content_id)
            new += 1
            if row.content_id not in self.disabled:
                self._hold(row)
        return new

    def drop_rows(self, keys: Iterable[RowKey]) -> int:
        """Rows gone from HMA (their content or bank was deleted)."""
        dropped = 0
        for key in list(keys):
            row = self.rows.pop(key, None)
            if row is None:
                continue
            dropped += 1
            keys_of_content = self._by_content[row.content_id]
            keys_of_content.remove(key)
            if not keys_of_content:
                del self._by_content[row.content_id]
            count, total = self._totals[row.hma_bank]
            self._totals[row.hma_bank] = (count - 1, total - row.content_id)
            if row.content_id not in self.disabled:
                self._release(row)
        return dropped

    def set_disabled(self, disabled: set[int]) -> tuple[int, int]:
        """The content ids HMA holds disabled now: newly disabled ones leave StreamSafe,
        re-enabled (or expired) ones come back. Returns (disabled, enabled) counts."""
        went, came = disabled - self.disabled, self.disabled - disabled
        for content_id in went:
            for key in self._by_content.get(content_id, ()):
                self._release(self.rows[key])
        self.disabled = set(disabled)
        for content_id in came:
            for key in self._by_content.get(content_id, ()):
                self._hold(self.rows[key])
        return len(went), len(came)

    def bank_totals(self) -> dict[str, tuple[int, int]]:
        """(rows, sum of content ids) per HMA bank, to compare with HMA's own."""
        return {bank: totals for bank, totals in self._totals.items() if totals[0]}

    def keys_of(self, hma_bank: str) -> set[RowKey]:
        return {key for key, row in self.rows.items() if row.hma_bank == hma_bank}

    # -- the checkpoint ------------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        return {"version": 1, "mapping": self.mapping.as_dict(),
                "cursor": self.cursor.isoformat() if self.cursor else None,
                "disabled": sorted(self.disabled),
                "rows": [[r.content_id, r.hma_signal_type, r.hma_bank, r.value, r.created_ms]
                         for r in self.rows.values()]}

    @classmethod
    def from_doc(cls, doc: dict[str, Any], mapping: BankMapping) -> SyncState:
        """The state a checkpoint describes, its entries taken as published (they were, before it
        was written); under another mapping, the entries that moved are pending changes."""
        if doc.get("version") != 1:
            raise ValueError(f"unknown checkpoint version {doc.get('version')!r}")
        from streamsafe.integrations.hma.mapping import MappedBank

        then = BankMapping(tuple(MappedBank(h, b, None) for h, b in doc["mapping"].items()))
        state = cls(then)
        state.cursor = datetime.fromisoformat(doc["cursor"]) if doc.get("cursor") else None
        state.disabled = set(doc["disabled"])
        state.add_rows(Row(int(c), str(t), str(b), str(v), int(ms)) for c, t, b, v, ms in doc["rows"])
        state.changes.clear()
        if then.as_dict() != mapping.as_dict():
            state.remap(mapping)
        state.mapping = mapping
        return state

    def remap(self, mapping: BankMapping) -> None:
        """Move to another mapping: entries it no longer makes are removed, new ones published;
        rows of HMA banks it no longer maps are forgotten (and banks it newly maps are read by
        the next poll's per-bank comparison)."""
        rows = list(self.rows.values())
        for row in rows:
            if row.content_id not in self.disabled:
                self._release(row)
        self.mapping = mapping
        self.rows, self._by_content, self._totals = {}, {}, {}
        self.add_rows(rows)
