"""Writing report packets out as CyberTipline documents, one packet at a time: a packet
that cannot be mapped (or, with a schema, does not validate) is noted with a one-line
reason and the others are still written."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from streamsafe.errors import ConfigError
from streamsafe.reports.cybertip import (
    UnmappableReport,
    file_details_documents,
    packet_from_json,
    report_document,
    serialize,
)
from streamsafe.reports.profile import PlatformProfile

__all__ = ["ExportResult", "export_cybertip", "load_xsd", "read_packet_lines"]


@dataclass
class ExportResult:
    reports: list[Path] = field(default_factory=list)
    file_details: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_xsd(path: Path) -> etree.XMLSchema:
    """NCMEC's schema, compiled; one-line :class:`ConfigError` if it cannot be."""
    try:
        return etree.XMLSchema(etree.parse(str(path)))
    except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ConfigError(f"{path}: cannot load the XML schema: {exc}") from None


def read_packet_lines(path: Path) -> Iterable[tuple[str, Any]]:
    """(where, packet or an :class:`UnmappableReport`) for each non-blank JSON line."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read report packets: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield f"{path.name} line {number}", packet_from_json(line)
            except UnmappableReport as exc:
                yield f"{path.name} line {number}", exc


def _check(document: etree._Element, schema: etree.XMLSchema | None, what: str) -> None:
    # validated as written, so an error's line number is the file's
    if schema is not None and not schema.validate(etree.fromstring(serialize(document))):
        error = schema.error_log.last_error
        raise UnmappableReport(f"{what} does not validate against the CyberTipline schema: "
                               f"line {error.line}: {error.message}")


def export_cybertip(packets: Iterable[tuple[str, Any]], profile: PlatformProfile, out: Path,
                    schema: etree.XMLSchema | None = None) -> ExportResult:
    """Write ``<report_id>.xml`` (the ``<report>``) and ``<report_id>.frame-<seq>.xml``
    (each hash-matched frame's ``<fileDetails>``) into ``out`` for every report, once (a
    re-delivered record is not written twice); a report sent again, completed (a higher
    ``revision``), is written over the first, unless it cannot be exported."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the output directory: {exc.strerror or exc}") from None
    result = ExportResult()
    written: dict[str, tuple[int, set[int]]] = {}  # report id -> the revision written, its frames
    for where, packet in packets:
        try:
            if isinstance(packet, UnmappableReport):
                raise packet
            named = packet.get("report_id") if isinstance(packet, dict) else None
            if isinstance(named, str) and _revision(packet) <= written.get(named, (0,))[0]:
                continue  # read again, or superseded by the revision already written
            report = report_document(packet, profile)
            report_id = str(packet["report_id"])
            _check(report, schema, "report")
            frames = file_details_documents(packet, profile)
            for seq, details in frames.items():
                _check(details, schema, f"fileDetails of frame {seq}")
        except UnmappableReport as exc:
            result.problems.append(f"{where}: {exc}")
            continue
        except ValueError as exc:  # lxml: a string XML cannot hold (NUL, control characters)
            result.problems.append(f"{where}: {packet.get('report_id')}: cannot be written as XML: {exc}")
            continue
        _, before = written.get(report_id, (0, None))  # a revision is written over the first
        _write(out / f"{report_id}.xml", report, result.reports if before is None else None)
        for seq in (before or set()) - set(frames):  # a frame the first had and the revision lost
            path = out / f"{report_id}.frame-{seq}.xml"
            path.unlink(missing_ok=True)
            result.file_details.remove(path)
        for seq, details in frames.items():
            _write(out / f"{report_id}.frame-{seq}.xml", details,
                   result.file_details if before is None or seq not in before else None)
        written[report_id] = (_revision(packet), set(frames))
    return result


def _revision(packet: dict[str, Any]) -> int:
    revision = packet.get("revision", 1)
    return revision if isinstance(revision, int) else 1


def _write(target: Path, document: etree._Element, written: list[Path] | None) -> None:
    """``written``: where to list the file (None: listed already, by a report's first revision)."""
    try:
        target.write_bytes(serialize(document))
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror or exc}") from None
    if written is not None:
        written.append(target)
