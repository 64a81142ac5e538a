"""NCMEC's CyberTipline schema for tests: found in ../shared/data/ncmec/ (the project's
shared data, not copied into the repository); tests that need it skip, saying so, where
it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

__all__ = ["XSD", "assert_valid", "needs_xsd", "xsd"]


def _find() -> Path | None:
    candidates = [p / "shared" / "data" / "ncmec" / "cyber_tipline.xsd" for p in Path(__file__).resolve().parents]
    return next((c for c in candidates if c.is_file()), None)


XSD = _find()
needs_xsd = pytest.mark.skipif(XSD is None, reason="NCMEC's schema not found (../shared/data/ncmec/cyber_tipline.xsd)")
_compiled: list[etree.XMLSchema] = []


def xsd() -> etree.XMLSchema:
    if not _compiled:
        assert XSD is not None
        _compiled.append(etree.XMLSchema(etree.parse(str(XSD))))
    return _compiled[0]


def assert_valid(document: etree._Element | bytes | Path) -> None:
    """Validate against the real XSD with lxml (libxml2's validator); the failure names
    every error."""
    if isinstance(document, Path):
        document = document.read_bytes()
    if isinstance(document, bytes):
        document = etree.fromstring(document)
    schema = xsd()
    if not schema.validate(document):
        raise AssertionError("not valid against cyber_tipline.xsd:\n"
                             + "\n".join(f"line {e.line}: {e.message}" for e in schema.error_log))
