"""The write-back's choice of records and its check-before-add, against a fake HMA client."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from streamsafe.events.bank_entries import bank_entry_document, entry_id_for
from streamsafe.events.contract import HASHBANK_ENTRIES
from streamsafe.events.models import BankEntry
from streamsafe.integrations.hma.writeback import HmaWriteback
from streamsafe.settings import Settings
from tests.signing_support import CONTROL_KEY, CONTROL_TRUST, new_key

H = "ab" * 32


def record(bank: str, source: str | None, signal_type: str = "pdq", hash_: str = H,
           value: bytes | None = b"", signer=None) -> ConsumerRecord:
    entry = BankEntry(entry_id_for(bank, signal_type, hash_), bank, signal_type, hash_, "confirmed A1 R-1")
    key = entry.entry_id.encode()
    data = (signer or CONTROL_KEY).sign_bytes(HASHBANK_ENTRIES, key, bank_entry_document(entry, source, 1)) \
        if value == b"" else value
    return ConsumerRecord("hashbank.entries", 0, 0, 0, 0, entry.entry_id.encode(), data, None, 0, 0, [])


class FakeHma:
    def __init__(self, existing: int | None) -> None:
        self.existing = existing
        self.added: list[tuple[str, str, str, str]] = []

    async def find_in_bank(self, bank: str, signal_type: str, signal: str) -> int | None:
        return self.existing

    async def add_signal(self, bank: str, signal_type: str, signal: str, note: str) -> int:
        self.added.append((bank, signal_type, signal, note))
        return 7


def writeback(client: FakeHma) -> HmaWriteback:
    back = HmaWriteback(Settings(), client, "CONFIRMED", group_id="g")  # type: ignore[arg-type]
    back.trusted = CONTROL_TRUST  # the workers' key: only what they took goes on to HMA
    return back


def test_only_reviewer_confirmed_pdqs_are_written_back():
    w = writeback(FakeHma(None))
    assert w.wanted(record("internal-confirmed", "reviewer")).hash == H
    assert w.wanted(record("internal-confirmed", "hma:OURS")) is None  # came from HMA: no loop
    assert w.wanted(record("ncmec", "reviewer")) is None
    assert w.wanted(record("internal-confirmed", "reviewer", "md5", "0f" * 16)) is None
    assert w.wanted(record("internal-confirmed", "reviewer", value=None)) is None  # tombstone
    assert w.wanted(record("internal-confirmed", "reviewer", value=b"{not json")) is None
    assert w.metrics.failures.labels("invalid")._value.get() == 1
    # a confirmed hash anyone could have written (unsigned, or by a key not trusted) is not written back
    assert w.wanted(record("internal-confirmed", "reviewer", signer=new_key())) is None
    assert w.metrics.failures.labels("bad_signature")._value.get() == 1


async def test_a_hash_hma_already_holds_is_not_added_again():
    fake = FakeHma(None)
    w = writeback(fake)
    entry = w.wanted(record("internal-confirmed", "reviewer"))
    assert await w.write(entry) == (7, True)
    assert fake.added == [("CONFIRMED", "pdq", H, "StreamSafe reviewer-confirmed: confirmed A1 R-1")]
    fake.existing = 7
    assert await w.write(entry) == (7, False) and len(fake.added) == 1
    assert w.metrics.already._value.get() == 1


def test_hma_tests_skip_without_hma_local_but_fail_in_ci(monkeypatch, tmp_path):
    import pytest

    from tests import hma_support

    monkeypatch.setattr(hma_support, "HMA_LOCAL", tmp_path / "hma-local")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"HMA tests need .*hma-local/run\.sh"):
        hma_support.hma_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: they must run"):
        hma_support.hma_or_skip()


def test_writeback_without_a_broker_is_one_error_line():
    from click.testing import CliRunner

    from streamsafe.brokers.base import free_port
    from streamsafe.cli import cli

    broker = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(cli, ["hma", "writeback", "--url", "http://127.0.0.1:1", "--bank", "CONFIRMED",
                                      "--broker", f"kafka://{broker}"])
    assert result.exit_code == 1, result.output
    errors = result.stderr.splitlines()
    assert errors[-1].startswith("Error: cannot reach the broker") and broker in errors[-1], result.stderr
