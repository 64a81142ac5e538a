"""The imperative shell around :func:`~streamsafe.accounts.step.account_step`: one account
signal in, the account's state written and its decisions published. Free of Faust, like
:class:`~streamsafe.agents.records.RecordHandler`, whose counting and publishing it shares.

Account ids are personal data: nothing here logs one (dead letters name topic, partition
and offset only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from typing import Any

from streamsafe.accounts.signals import AccountSignal, AccountSignalDecoder
from streamsafe.accounts.state import AccountState
from streamsafe.accounts.step import AccountOutcome, account_step
from streamsafe.agents.records import RecordHandler
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import ACCOUNT_SIGNALS
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.pipeline.outcome import Outcome

__all__ = ["AccountHandler"]


class AccountHandler:
    def __init__(self, decoder: AccountSignalDecoder, accounts: MutableMapping[str, Any], records: RecordHandler,
                 partitions: int = 0, partition_of: Callable[[bytes, int], int] | None = None) -> None:
        """``partition_of(key, partitions)``: the partition Kafka's default partitioner gives a key
        (None: not checked): an account's signals and state must share a partition."""
        self.decoder = decoder
        self.accounts = accounts
        self.records = records
        self.partitions = partitions
        self.partition_of = partition_of
        self.state_writes = 0

    async def handle(self, key: bytes | None, value: bytes | None, source: SourceRecord) -> None:
        records = self.records
        records.in_flight[ACCOUNT_SIGNALS] = time.monotonic()
        try:
            records.note_arrival(ACCOUNT_SIGNALS)
            try:
                signal = self.decoder.decode(key, value)
                self._check_partition(key, source)
            except RejectedInput as exc:
                await records.publish(Outcome(dead_letters=(DeadLetter(exc.reason, exc.detail, source, key, value),)),
                                      ACCOUNT_SIGNALS)
                return
            records.count_input(ACCOUNT_SIGNALS)
            outcome = self._apply(signal)
            if outcome.findings:  # to the streams' partitions, where their workers decide
                await records.publisher.send_account_findings(outcome.findings)
            if outcome.decisions:
                await records.publish(Outcome(decisions=outcome.decisions), ACCOUNT_SIGNALS)
        except Exception as exc:  # one record must never take the agent down
            await records._failed(exc, ACCOUNT_SIGNALS, key, value, source)
        finally:
            records.in_flight.pop(ACCOUNT_SIGNALS, None)

    def _check_partition(self, key: bytes | None, source: SourceRecord) -> None:
        if self.partition_of is None or key is None or source.partition < 0:
            return
        expected = self.partition_of(key, self.partitions)
        if source.partition != expected:
            raise RejectedInput("wrong_partition", f"the key belongs on partition {expected} (murmur2), the record "
                                f"is on {source.partition}")

    def _apply(self, signal: AccountSignal) -> AccountOutcome:
        """Read, step, write: synchronous on purpose (no await between the read and the write)."""
        stored = self.accounts.get(signal.account_id)
        state = AccountState.from_record(stored) if stored is not None else None
        outcome = account_step(signal, state, self.records.policies.live)
        if outcome.delete:
            self.accounts.pop(signal.account_id, None)
        elif outcome.state is not None:
            self.accounts[signal.account_id] = outcome.state.to_record()
            self.state_writes += 1
        for d in outcome.decisions:
            self.records.stats.decided[d.action] += 1
        return outcome

    def due_expiries(self, now_ms: int) -> list[AccountSignal]:
        """Expiry ticks for accounts whose newest entry is past the retention (processing clock)."""
        retention_ms = int(self.records.policies.live.accounts.retention_s * 1000)
        due: list[AccountSignal] = []
        for account_id, record in list(self.accounts.items()):
            expires = AccountState.from_record(record).expires_ms(retention_ms)
            if expires <= now_ms:
                due.append(AccountSignal(account_id, "expire", expires))
        return due
