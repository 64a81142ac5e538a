"""Apply ``hashbank.entries`` records to the worker's banks: signed additions in batches,
signed removals in order; unsigned, untrusted or corrupt records (tombstones included: they
cannot carry a signature) go to the dead-letter topic and change nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import ConsumerRecord

from streamsafe.budget import BATCH_BUDGET_S, TimeBudget
from streamsafe.control.records import check_bank_record
from streamsafe.control.signing import TrustedKeys
from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import HASHBANK_ENTRIES
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.observability.metrics import StreamSafeMetrics

__all__ = ["BankControl"]

log = logging.getLogger(__name__)


class BankControl:
    def __init__(self, banks: HashBanks, publisher: DecisionPublisher,
                 metrics: StreamSafeMetrics | None = None, trusted: TrustedKeys | None = None, *,
                 budget_s: float = BATCH_BUDGET_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.trusted = trusted if trusted is not None else TrustedKeys({})
        self.banks = banks
        self.publisher = publisher
        self.rejected = 0
        self.budget_s = budget_s
        self.clock = clock

    async def apply(self, records: Sequence[ConsumerRecord]) -> None:
        """Apply a batch in order, checking its records in slices cut by :attr:`budget_s` (a
        signature costs ~50-170 µs), so decisions are not held behind a whole import. Additions
        go into the banks together (a removal first lands the additions before it): the PDQ
        index takes a batch at a time far better than many small ones."""
        additions: list[BankEntry] = []
        rejected: list[tuple[ConsumerRecord, RejectedInput]] = []
        budget = TimeBudget(self.budget_s, self.clock)
        for record in records:
            if budget.spent():  # the additions so far stay in hand: the index takes them in one batch
                await budget.next_slice()
            try:
                change = check_bank_record(self.trusted, record.key, record.value)
                if change.entry is not None:
                    additions.append(change.entry)
                    continue
                # keep order: additions before this removal must land first
                if additions:
                    self._add(additions, records, rejected)
                    additions = []
                self.banks.remove(change.entry_id, at=record.timestamp / 1000)  # as of the removal's own time
            except RejectedInput as exc:
                rejected.append((record, exc))
            except Exception as exc:  # one odd entry must not cost the rest of the batch
                rejected.append((record, RejectedInput("invalid_bank_entry", f"{type(exc).__name__}: {exc}")))
        if additions:
            self._add(additions, records, rejected)
        for record, exc in rejected:  # dead letters after every good entry is in force
            self.rejected += 1
            if self.metrics is not None:
                self.metrics.bank_entries_rejected.labels(exc.reason).inc()
                self.metrics.control_refused.labels(HASHBANK_ENTRIES, exc.reason).inc()
            log.warning("bank entry at %s[%d]@%d rejected: %s", record.topic, record.partition,
                        record.offset, exc.reason)
            source = SourceRecord(record.topic, record.partition, record.offset, record.timestamp)
            await self.publisher.dead_letter(DeadLetter(exc.reason, exc.detail, source, record.key,
                                                        record.value))

    def _add(self, additions: list[BankEntry], records: Sequence[ConsumerRecord],
             rejected: list[tuple[ConsumerRecord, RejectedInput]]) -> None:
        """Add a batch of entries; if the batch fails, add them one by one and reject the ones that fail."""
        try:
            self.banks.add_many(additions)
            return
        except Exception:
            log.warning("adding %d bank entries failed; adding them one by one", len(additions))
        by_id = {r.key.decode(errors="replace"): r for r in records if r.key}
        for entry in additions:
            try:
                self.banks.add_many([entry])
            except Exception as exc:
                record = by_id.get(entry.entry_id)
                if record is not None:
                    rejected.append((record, RejectedInput("invalid_bank_entry", f"{type(exc).__name__}: {exc}")))
