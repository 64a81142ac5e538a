"""Reading HMA's banks from its PostgreSQL (``bank``, ``bank_content``, ``content_signal``).

HMA's API has no export of a bank's signals; its schema does. Each poll is one read-only
REPEATABLE READ transaction (one consistent snapshot) of three cheap queries:

* new rows: ``content_signal`` from shortly before the checkpoint's newest ``create_time``
  (HMA's own incremental index uses the same (signal_type, create_time, content_id) index);
* disabled content: ``disable_until_ts`` 0 (disabled) or a time still to come (1 = enabled);
* per bank, how many rows and the sum of their content ids: deletions leave no trace in HMA's
  schema, so a bank whose totals differ from the sync's is re-listed (ids only) and diffed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from streamsafe.integrations.hma.state import Row, RowKey

__all__ = ["HmaSnapshot", "connect", "plain_dsn"]

#: how far before the checkpoint a poll re-reads, for rows whose transaction committed late
OVERLAP = timedelta(seconds=30)
PAGE = 20_000

_ROWS = """
SELECT cs.content_id, cs.signal_type, b.name, cs.signal_val, cs.create_time
FROM content_signal cs JOIN bank_content bc ON bc.id = cs.content_id JOIN bank b ON b.id = bc.bank_id
WHERE b.name = ANY(%(banks)s) AND cs.signal_type = ANY(%(types)s)
  AND (cs.create_time, cs.content_id, cs.signal_type) > (%(time)s, %(id)s, %(type)s)
ORDER BY cs.create_time, cs.content_id, cs.signal_type LIMIT %(limit)s
"""
_ROWS_OF = """
SELECT cs.content_id, cs.signal_type, b.name, cs.signal_val, cs.create_time
FROM content_signal cs JOIN bank_content bc ON bc.id = cs.content_id JOIN bank b ON b.id = bc.bank_id
WHERE b.name = %(bank)s AND cs.signal_type = ANY(%(types)s) AND cs.content_id = ANY(%(ids)s)
"""
_DISABLED = """
SELECT bc.id FROM bank_content bc JOIN bank b ON b.id = bc.bank_id
WHERE b.name = ANY(%(banks)s)
  AND (bc.disable_until_ts = 0 OR (bc.disable_until_ts <> 1 AND bc.disable_until_ts > extract(epoch FROM now())))
"""
_TOTALS = """
SELECT b.name, count(*), coalesce(sum(cs.content_id), 0)
FROM content_signal cs JOIN bank_content bc ON bc.id = cs.content_id JOIN bank b ON b.id = bc.bank_id
WHERE b.name = ANY(%(banks)s) AND cs.signal_type = ANY(%(types)s) GROUP BY b.name
"""
_KEYS = """
SELECT cs.content_id, cs.signal_type
FROM content_signal cs JOIN bank_content bc ON bc.id = cs.content_id JOIN bank b ON b.id = bc.bank_id
WHERE b.name = %(bank)s AND cs.signal_type = ANY(%(types)s)
"""


def plain_dsn(dsn: str) -> str:
    """A libpq DSN from one in SQLAlchemy's spelling (``postgresql+psycopg2://``, as HMA's config has it)."""
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", dsn)


async def connect(dsn: str, timeout_s: float = 10.0) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(plain_dsn(dsn), connect_timeout=int(timeout_s),
                                                 application_name="streamsafe-hma-sync")
    await conn.set_read_only(True)
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    return conn


def _row(record: tuple) -> Row:  # type: ignore[type-arg]
    content_id, signal_type, bank, value, created = record
    return Row(int(content_id), str(signal_type), str(bank), str(value), int(created.timestamp() * 1000))


@dataclass
class HmaSnapshot:
    """The queries of one poll, inside one transaction of ``conn``."""

    conn: psycopg.AsyncConnection
    banks: list[str]
    types: list[str]

    async def rows_since(self, cursor: datetime | None) -> tuple[list[Row], datetime | None]:
        """Rows created since shortly before ``cursor`` (all, without one), and the newest time seen."""
        rows: list[Row] = []
        after: tuple[datetime, int, str] = ((cursor - OVERLAP) if cursor else datetime(1970, 1, 1).astimezone(), -1, "")
        newest = cursor
        while True:
            params = {"banks": self.banks, "types": self.types, "time": after[0], "id": after[1],
                      "type": after[2], "limit": PAGE}
            page = await (await self.conn.execute(_ROWS, params)).fetchall()
            rows.extend(_row(r) for r in page)
            if page:
                last = page[-1]
                after = (last[4], last[0], last[1])
                newest = last[4] if newest is None else max(newest, last[4])
            if len(page) < PAGE:
                return rows, newest

    async def rows_of(self, bank: str, content_ids: list[int]) -> list[Row]:
        params = {"bank": bank, "types": self.types, "ids": content_ids}
        return [_row(r) for r in await (await self.conn.execute(_ROWS_OF, params)).fetchall()]

    async def disabled(self) -> set[int]:
        return {r[0] for r in await (await self.conn.execute(_DISABLED, {"banks": self.banks})).fetchall()}

    async def totals(self) -> dict[str, tuple[int, int]]:
        records = await (await self.conn.execute(_TOTALS, {"banks": self.banks, "types": self.types})).fetchall()
        return {str(name): (int(count), int(total)) for name, count, total in records}

    async def keys_of(self, bank: str) -> set[RowKey]:
        records = await (await self.conn.execute(_KEYS, {"bank": bank, "types": self.types})).fetchall()
        return {(int(c), str(t)) for c, t in records}
