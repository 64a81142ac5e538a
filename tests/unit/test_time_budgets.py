"""Large control batches are worked through in slices cut by a time budget (no timing: a
clock the test moves), so decisions run between the slices of a bank import or its audit."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from streamsafe.budget import TimeBudget
from streamsafe.control.auditor import ControlAuditor
from streamsafe.control.banks import BankControl
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.bank_entries import entry_id_for
from streamsafe.events.contract import HASHBANK_ENTRIES, POLICY
from streamsafe.matching.banks import HashBanks
from streamsafe.settings import Settings
from tests.loop_support import LoopTurns, StepClock
from tests.signing_support import CONTROL_KEY, CONTROL_TRUST


def signed_entries(n: int) -> list[ConsumerRecord]:
    out = []
    for i in range(n):
        key = entry_id_for("ncmec", "md5", f"{i:032x}").encode()
        value = CONTROL_KEY.sign_bytes(HASHBANK_ENTRIES, key, {"schema_version": 1, "bank": "ncmec",
                                                               "signal_type": "md5", "hash": f"{i:032x}",
                                                               "added_ms": 1})
        out.append(ConsumerRecord(HASHBANK_ENTRIES, 0, i, 1_764_324_000_000, 0, key, value, None, len(value),
                                  len(key), []))
    return out


async def test_a_bank_import_is_cut_by_its_time_budget_and_decisions_run_between_the_slices():
    banks = HashBanks()
    # a budget of 10 clock steps: a slice checks about ten entries, whatever they really cost
    control = BankControl(banks, InMemoryPublisher(), trusted=CONTROL_TRUST, budget_s=10.0, clock=StepClock(1.0))
    async with LoopTurns() as turns:  # times another task (a decision) got the loop while the import ran
        await control.apply(signed_entries(100))
    assert len(banks) == 100
    assert 5 <= turns.count <= 12, turns.count  # about one turn per slice of ten


async def test_an_audit_slice_stops_at_its_budget_and_the_rest_follows(contract):
    auditor = ControlAuditor(Settings(), contract[POLICY], InMemoryPublisher(), CONTROL_TRUST, "w@test")
    records = signed_entries(30)
    audits, done = auditor.audit_slice(HASHBANK_ENTRIES, records, TimeBudget(5.0, StepClock(1.0)))
    assert 0 < done < 30 and [a["count"] for a in audits] == [done]
    rest, more = auditor.audit_slice(HASHBANK_ENTRIES, records, None, start=done)
    assert more == 30 - done and [a["count"] for a in rest] == [30 - done]
    assert rest[0]["offset"] == done  # the run goes on where the slice stopped
    assert auditor.audit_batch(HASHBANK_ENTRIES, records)[0]["count"] == 30  # no budget: one run
