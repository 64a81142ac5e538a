"""Screening frames, without a broker: the pre-filter forwards exactly the messages whose
processing could decide something, as what it decoded and matched; the agent steps on
that without decoding or matching again, and decides what the agent path decides."""

import asyncio

import orjson
import pytest

from streamsafe.agents.clock import RecordClock
from streamsafe.agents.records import RecordHandler
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.contract import FRAME_HASHES
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder, decode_frame_matches
from streamsafe.events.encode import encode_frame_matches
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.loader import load_policy
from streamsafe.policy.policyset import PolicySet

KNOWN_MD5 = "9e107d9d372bb6826bd81d3542a419d6"
ALLOWED_MD5 = "0cc175b9c0f1b6a831c399e269772661"
T0 = 1_764_324_000_000


def make_handler(contract) -> RecordHandler:
    banks = HashBanks()
    banks.add(BankEntry("ncmec:1", "ncmec", "md5", KNOWN_MD5))
    banks.add(BankEntry("allow:1", "platform-allow", "md5", ALLOWED_MD5))
    return RecordHandler(InputDecoder(contract, 65536), banks, PolicySet(load_policy()), {}, InMemoryPublisher(),
                         clock=RecordClock())


@pytest.fixture
def handler(contract):
    return make_handler(contract)


def frames(stream, *digests, start=0):
    return orjson.dumps({"schema_version": 1, "stream_id": stream,
                         "frames": [{"seq": start + i, "ts_ms": T0 + i, "md5": d} for i, d in enumerate(digests)]})


def src(offset=0):
    return SourceRecord(FRAME_HASHES, 3, offset, T0 + offset)


def screen(handler, key, value, source):
    return handler.screen.screen([(key, value, source)])[0]


def test_benign_frames_are_screened_out(handler):
    outcome = screen(handler, b"s1", frames("s1", "0" * 32, "1" * 32), src())
    assert outcome.matches is None and outcome.dead_letter is None


def test_a_message_with_a_bank_match_carries_only_its_matched_frames(handler):
    outcome = screen(handler, b"s1", frames("s1", "0" * 32, KNOWN_MD5), src())
    assert outcome.dead_letter is None and outcome.matches is not None
    assert [f.seq for f in outcome.matches.frames] == [1]
    assert [(m.entry_id, m.frame_seq) for m in outcome.matches.matches] == [("ncmec:1", 1)]


def test_bad_input_is_dead_lettered_with_its_source(handler):
    outcome = screen(handler, b"s1", b"{not json", src(7))
    assert outcome.matches is None
    assert outcome.dead_letter is not None and outcome.dead_letter.reason == "malformed_json"
    assert outcome.dead_letter.source == src(7) and outcome.dead_letter.value == b"{not json"
    key_mismatch = screen(handler, b"other", frames("s1", KNOWN_MD5), src())
    assert key_mismatch.dead_letter is not None and key_mismatch.dead_letter.reason == "key_mismatch"


def test_a_frame_an_allow_bank_clears_is_not_forwarded(handler):
    assert handler.policies.live.trust_of("platform-allow") == "allow"
    assert screen(handler, b"s1", frames("s1", ALLOWED_MD5), src()).matches is None


def test_the_forwarded_record_round_trips_and_validates(handler, contract):
    import fastjsonschema

    outcome = screen(handler, b"s1", frames("s1", "0" * 32, KNOWN_MD5), src(12))
    encoded = encode_frame_matches(outcome.matches, src(12))
    fastjsonschema.compile(dict(contract["streamsafe.frame-matches"].schema))(orjson.loads(encoded))
    assert decode_frame_matches(encoded) == (outcome.matches, src(12))


async def test_forwarded_matches_decide_as_the_agent_path_does(contract):
    """Every message to the agent path vs only the forwarded ones through the
    pre-filter: the same decisions, ids included."""
    messages = [(b"s1", frames("s1", f"{i:032x}", start=i)) for i in range(20)]
    messages[7] = (b"s1", frames("s1", KNOWN_MD5, start=7))
    messages.append((b"s2", frames("s2", KNOWN_MD5, "2" * 32)))
    everything, screened = make_handler(contract), make_handler(contract)
    forwarded = 0
    for offset, (key, value) in enumerate(messages):
        await everything.handle(FRAME_HASHES, key, value, src(offset))
        outcome = screen(screened, key, value, src(offset))
        screened.count_input(FRAME_HASHES)
        if outcome.matches is not None:
            forwarded += 1
            fallback = SourceRecord("streamsafe.frame-matches", 3, forwarded, T0 + offset)
            await screened.handle_forwarded(key, encode_frame_matches(outcome.matches, src(offset)), fallback)
    assert forwarded == 2
    assert everything.publisher.decisions and everything.publisher.decisions == screened.publisher.decisions
    assert everything.stats.accepted == screened.stats.accepted


async def test_a_forwarded_frame_is_decoded_and_matched_once(contract, monkeypatch):
    handler = make_handler(contract)
    calls = {"decode": 0, "match": 0}
    decode, match = handler.decoder.decode, handler.banks.match_frame_groups

    def counting_decode(*args, **kwargs):
        calls["decode"] += 1
        return decode(*args, **kwargs)

    def counting_match(*args, **kwargs):
        calls["match"] += 1
        return match(*args, **kwargs)

    monkeypatch.setattr(handler.decoder, "decode", counting_decode)
    monkeypatch.setattr(handler.banks, "match_frame_groups", counting_match)
    records = [(b"s1", frames("s1", KNOWN_MD5), src(0)), (b"s2", frames("s2", "3" * 32), src(1))]
    screened = handler.screen.screen(records)  # the pre-filter: one decode each, one index call
    assert calls == {"decode": 2, "match": 1}
    await handler.handle_forwarded(b"s1", encode_frame_matches(screened[0].matches, src(0)), src(0))
    assert calls == {"decode": 2, "match": 1}  # the agent neither decodes nor matches again
    assert [d.action for d in handler.publisher.decisions if d.action == "block"] == ["block"]


def test_screening_many_at_once_screens_each_as_alone(handler):
    records = [(b"s1", frames("s1", "0" * 32), src(0)), (b"s2", b"{bad", src(1)),
               (b"s3", frames("s3", KNOWN_MD5), src(2)), (b"s4", frames("s4", ALLOWED_MD5), src(3))]
    together = handler.screen.screen(records)
    assert together == [screen(handler, *r) for r in records]
    assert [o.matches is not None for o in together] == [False, False, True, False]
    assert together[1].dead_letter is not None


class RecordingTopic:
    """A Sendable that notes, on the pre-filter's clock, when each record was sent."""

    def __init__(self, clock):
        self.clock = clock
        self.sent = []

    async def send(self, *, key, value, partition=None, timestamp_ms=None):
        import asyncio

        self.sent.append((self.clock(), key))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_a_batch_is_cut_by_its_time_budget_and_a_match_is_sent_before_the_rest_is_screened(contract):
    from aiokafka import ConsumerRecord, TopicPartition

    from streamsafe.agents.prefilter import FramePreFilter
    from streamsafe.settings import Settings

    now = [0.0]
    handler = make_handler(contract)
    screen_many = handler.screen.screen
    sliced = []

    def costly_screen(items):  # 1 ms of the pre-filter's clock per frame: no real time involved
        sliced.append(len(items))
        now[0] += 0.001 * len(items)
        return screen_many(items)

    handler.screen.screen = costly_screen
    prefilter = FramePreFilter(Settings(), handler, ready=None, max_batch=500, budget_s=0.010, clock=lambda: now[0])
    prefilter._forward_to = forwards = RecordingTopic(lambda: now[0])
    prefilter._dead_letter_to = RecordingTopic(lambda: now[0])
    tp = TopicPartition(FRAME_HASHES, 3)
    records = [ConsumerRecord(FRAME_HASHES, 3, i, T0 + i, 0, f"s{i}".encode(),
                              frames(f"s{i}", KNOWN_MD5 if i == 40 else "0" * 32), None, 0, 0, [])
               for i in range(500)]
    await prefilter.screen_batch({tp: records})
    assert sliced[:3] == [32, 10, 10]  # the first slice measures the cost; then 10 ms worth each
    assert sum(sliced) == 500 and max(sliced[1:]) <= 10
    assert len(forwards.sent) == 1 and forwards.sent[0][1] == b"s40"
    sent_at = forwards.sent[0][0]
    assert sent_at <= 0.042 + 1e-9 < now[0] == pytest.approx(0.5)  # sent with its slice, not after the batch
    assert prefilter.screened_to == {tp: 500} and prefilter.forwarded == 1
    await prefilter.deliveries.settled()


async def test_agents_waiting_for_a_batch_are_let_go_when_it_is_screened_or_their_wait_runs_out(contract):
    from aiokafka import ConsumerRecord, TopicPartition

    from streamsafe.agents.prefilter import FramePreFilter
    from streamsafe.settings import Settings

    now = [0.0]
    handler = make_handler(contract)
    screen_many = handler.screen.screen

    def costly_screen(items):  # 1 ms of the pre-filter's clock per frame: slices of 10
        now[0] += 0.001 * len(items)
        return screen_many(items)

    handler.screen.screen = costly_screen
    prefilter = FramePreFilter(Settings(), handler, ready=None, max_batch=500, budget_s=0.010, clock=lambda: now[0])
    prefilter._forward_to = RecordingTopic(lambda: now[0])
    prefilter._dead_letter_to = RecordingTopic(lambda: now[0])
    await prefilter.until_screened(10.0)  # no batch in hand: at once
    assert prefilter.batches == 0
    tp = TopicPartition(FRAME_HASHES, 3)
    records = [ConsumerRecord(FRAME_HASHES, 3, i, T0 + i, 0, f"s{i}".encode(), frames(f"s{i}", "0" * 32),
                              None, 0, 0, []) for i in range(100)]
    let_go: dict[str, tuple[bool, float]] = {}

    async def agent(name: str, at_most_s: float) -> None:
        await prefilter.until_screened(at_most_s)
        let_go[name] = (prefilter.screening(), now[0])

    batch = asyncio.ensure_future(prefilter.screen_batch({tp: records}))
    await asyncio.sleep(0)  # the batch is taken in hand
    assert prefilter.screening() and prefilter.batches == 1
    waiters = [asyncio.ensure_future(agent("patient", 10.0)), asyncio.ensure_future(agent("timed out", 0.0))]
    await batch
    await asyncio.gather(*waiters)
    assert let_go["timed out"][0] is True and let_go["timed out"][1] < 0.1  # let go with the batch in hand
    assert let_go["patient"] == (False, pytest.approx(0.1))  # let go once all 100 frames were screened
    await prefilter.deliveries.settled()


def test_an_allow_match_clears_weak_and_partner_matches_but_not_strong_authority_ones(contract):
    from dataclasses import replace

    base = make_handler(contract)
    base.banks.add_many([BankEntry("ncmec:allowed-too", "ncmec", "md5", ALLOWED_MD5),
                         BankEntry("partner:allowed", "partner-x", "md5", ALLOWED_MD5)])
    outcome = screen(base, b"s1", frames("s1", ALLOWED_MD5), src())
    assert [m.entry_id for m in outcome.matches.matches] == ["ncmec:allowed-too"]  # known abuse stands
    assert (outcome.allow_cleared, outcome.allow_overruled) == (1, 1)  # the partner match cleared
    base.count_allow(outcome)
    assert base.metrics.allow_effects.labels("overruled")._value.get() == 1

    live = base.policies.live
    trusting = make_handler(contract)
    trusting.banks.add_many([BankEntry("ncmec:allowed-too", "ncmec", "md5", ALLOWED_MD5)])
    trusting.use_policies(PolicySet(replace(live, allow_clears_authority=frozenset({"platform-allow"}))))
    cleared = screen(trusting, b"s1", frames("s1", ALLOWED_MD5), src())
    assert cleared.matches is None and (cleared.allow_cleared, cleared.allow_overruled) == (1, 0)


def test_only_allow_banks_may_be_trusted_to_clear_authority_matches():
    from streamsafe.errors import PolicyError
    from streamsafe.policy.loader import default_policy_text

    text = default_policy_text()
    assert load_policy(text.replace("allow_clears_authority: []", "allow_clears_authority: [platform-allow]")
                       ).allow_clears_authority == {"platform-allow"}
    with pytest.raises(PolicyError, match="allow_clears_authority"):
        load_policy(text.replace("allow_clears_authority: []", "allow_clears_authority: [ncmec]"))


async def test_screening_goes_on_while_a_commit_waits_for_the_broker(contract):
    """A commit waits for the forwards' acknowledgements and the broker's reply; the frames
    behind it (and the matches among them) must not wait with it."""
    import asyncio

    from aiokafka import ConsumerRecord, TopicPartition
    from aiokafka.errors import ConsumerStoppedError

    from streamsafe.agents.prefilter import FramePreFilter
    from streamsafe.settings import Settings

    tp = TopicPartition(FRAME_HASHES, 3)

    def batch(first):
        return {tp: [ConsumerRecord(FRAME_HASHES, 3, i, T0 + i, 0, f"s{i}".encode(), frames(f"s{i}", "0" * 32),
                                    None, 0, 0, []) for i in range(first, first + 2)]}

    class Consumer:
        def __init__(self):
            self.batches = [batch(0), batch(2), batch(4)]
            self.reply = asyncio.Event()  # the broker's answer to a commit, held back
            self.committed = []

        async def getmany(self, timeout_ms, max_records):
            if not self.batches:
                raise ConsumerStoppedError()
            return self.batches.pop(0)

        def assignment(self):
            return {tp}

        async def commit(self, offsets):
            await self.reply.wait()
            self.committed.append(offsets)

    now = [0.0]
    ready = asyncio.Event()
    ready.set()
    prefilter = FramePreFilter(Settings(commit_interval_s=1.0), make_handler(contract), ready, clock=lambda: now[0])
    prefilter._consumer = consumer = Consumer()
    now[0] = 5.0  # the commit interval has passed: the first batch is committed
    await asyncio.wait_for(FramePreFilter._screen_forever(prefilter), 5.0)  # the Service task, run here
    assert prefilter.screened == 6 and consumer.committed == []  # every batch screened; the commit still waits
    consumer.reply.set()
    await prefilter._committing
    assert consumer.committed and consumer.committed[0][tp] in (2, 4, 6) and prefilter.committed[tp] >= 2
