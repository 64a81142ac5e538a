"""Read hash files in the forms people hold them, for ``streamsafe bank import``.

* ``lines``: one hash per line; ``TYPE:HEX`` or bare hex (32 hex = MD5; 64 hex needs
  ``signal_type``, since PDQ and SHA-256 look alike); ``#`` comments.
* ``csv``: a header with a ``hash`` column and optional ``signal_type``, ``bank``,
  ``label`` and ``quality`` columns.
* ``pdq``: python-threatexchange / HMA style PDQ exports: a 64-hex PDQ hash per line,
  optionally prefixed ``pdq`` and followed by a quality (comma or space separated).

Bad lines are reported with their line numbers and skipped, never silently.
Entry ids are derived from bank, type and hash, so importing a file twice
publishes the same entries again rather than duplicates.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamsafe.events.bank_entries import entry_id_for
from streamsafe.events.models import BankEntry
from streamsafe.matching.signal_types import default_registry

__all__ = ["FORMATS", "ImportProblem", "detect_format", "entry_id_for", "read_entries"]

FORMATS = ("lines", "csv", "pdq")
_REGISTRY = default_registry()
_PDQ_LINE = re.compile(r"^(?:pdq[\s,]+)?([0-9a-fA-F]{64})(?:[\s,]+(\d{1,3}))?$")


@dataclass(frozen=True, slots=True)
class ImportProblem:
    line: int
    reason: str


def detect_format(path: Path) -> str:
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() in (".pdq", ".te") or "pdq" in path.name.lower():
        return "pdq"
    return "lines"


def read_entries(path: Path, bank: str, fmt: str, signal_type: str | None = None,
                 source: str | None = None) -> Iterator[BankEntry | ImportProblem]:
    """Entries and problems, in file order (so progress can be shown while reading)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        if fmt == "csv":
            yield from _csv(handle, bank, signal_type)
        elif fmt == "pdq":
            yield from _pdq(handle, bank)
        else:
            yield from _lines(handle, bank, signal_type)


def _entry(bank: str, signal_type: str, value: str, label: str | None = None,
           quality: int | None = None) -> BankEntry:
    canonical = _REGISTRY.get(signal_type).validate(value)
    return BankEntry(entry_id_for(bank, signal_type, canonical), bank, signal_type, canonical, label, quality)


def _lines(handle: io.TextIOBase, bank: str, signal_type: str | None) -> Iterator[BankEntry | ImportProblem]:
    for number, raw in enumerate(handle, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        token, _, label = line.partition(" ")
        kind, sep, value = token.partition(":")
        if not sep:
            value = kind
            kind = "md5" if len(value) == 32 else signal_type or ""
            if not kind:
                ambiguous = "64-hex hashes may be PDQ or SHA-256: write TYPE:HEX or pass --signal-type"
                yield ImportProblem(number, ambiguous if len(value) == 64 else "not a 32- or 64-hex hash")
                continue
        try:
            yield _entry(bank, kind, value, label.strip() or None)
        except (KeyError, ValueError) as exc:
            yield ImportProblem(number, str(exc).strip("'\""))


def _csv(handle: io.TextIOBase, bank: str, signal_type: str | None) -> Iterator[BankEntry | ImportProblem]:
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or "hash" not in [f.strip().lower() for f in reader.fieldnames]:
        yield ImportProblem(1, "CSV needs a header with a 'hash' column")
        return
    for row in reader:
        number = reader.line_num
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        value = row.get("hash", "")
        kind = row.get("signal_type") or ("md5" if len(value) == 32 else signal_type or "")
        if not kind:
            yield ImportProblem(number, "no signal_type column and --signal-type not given")
            continue
        quality = row.get("quality")
        try:
            q = int(quality) if quality else None
            if q is not None and not 0 <= q <= 100:
                raise ValueError("quality must be 0..100")
            yield _entry(row.get("bank") or bank, kind, value, row.get("label") or None, q)
        except (KeyError, ValueError) as exc:
            yield ImportProblem(number, str(exc).strip("'\""))


def _pdq(handle: io.TextIOBase, bank: str) -> Iterator[BankEntry | ImportProblem]:
    for number, raw in enumerate(handle, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PDQ_LINE.match(line)
        if not match:
            yield ImportProblem(number, "not a PDQ line (64 hex, optional quality)")
            continue
        quality = int(match.group(2)) if match.group(2) else None
        if quality is not None and quality > 100:
            yield ImportProblem(number, "quality must be 0..100")
            continue
        yield _entry(bank, "pdq", match.group(1), quality=quality)
