"""The frame pre-filter's screen, without a broker: it forwards exactly the messages
whose processing could decide something, and decisions from forwarded messages are
those of the agent path."""

import orjson
import pytest

from streamsafe.agents.prefilter import SOURCE_HEADER, screen, screen_many, source_of
from streamsafe.agents.processor import StreamProcessor
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.contract import FRAME_HASHES
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.loader import load_policy
from streamsafe.policy.policyset import PolicySet

KNOWN_MD5 = "9e107d9d372bb6826bd81d3542a419d6"
ALLOWED_MD5 = "0cc175b9c0f1b6a831c399e269772661"
T0 = 1_764_324_000_000


def make_processor(contract) -> StreamProcessor:
    banks = HashBanks()
    banks.add(BankEntry("ncmec:1", "ncmec", "md5", KNOWN_MD5))
    banks.add(BankEntry("allow:1", "platform-allow", "md5", ALLOWED_MD5))
    return StreamProcessor(InputDecoder(contract, 65536), banks, PolicySet(load_policy()), {},
                           InMemoryPublisher())


@pytest.fixture
def processor(contract):
    return make_processor(contract)


def frames(stream, *digests, start=0):
    return orjson.dumps({"schema_version": 1, "stream_id": stream,
                         "frames": [{"seq": start + i, "ts_ms": T0 + i, "md5": d} for i, d in enumerate(digests)]})


def src(offset=0):
    return SourceRecord(FRAME_HASHES, 3, offset, T0 + offset)


def test_benign_frames_are_screened_out(processor):
    outcome = screen(processor, b"s1", frames("s1", "0" * 32, "1" * 32), src())
    assert not outcome.forward and outcome.dead_letter is None


def test_a_message_with_a_bank_match_is_forwarded(processor):
    outcome = screen(processor, b"s1", frames("s1", "0" * 32, KNOWN_MD5), src())
    assert outcome.forward and outcome.dead_letter is None


def test_bad_input_is_dead_lettered_with_its_source(processor):
    outcome = screen(processor, b"s1", b"{not json", src(7))
    assert not outcome.forward
    assert outcome.dead_letter is not None and outcome.dead_letter.reason == "malformed_json"
    assert outcome.dead_letter.source == src(7) and outcome.dead_letter.value == b"{not json"
    key_mismatch = screen(processor, b"other", frames("s1", KNOWN_MD5), src())
    assert key_mismatch.dead_letter is not None and key_mismatch.dead_letter.reason == "key_mismatch"


def test_a_frame_an_allow_bank_clears_is_not_forwarded(processor):
    assert processor.policies.live.trust_of("platform-allow") == "allow"
    assert not screen(processor, b"s1", frames("s1", ALLOWED_MD5), src()).forward


def test_source_header_gives_the_original_coordinates():
    fallback = SourceRecord("t.streamsafe.frame-matches", 3, 99, T0)
    forwarded = source_of([(SOURCE_HEADER, b"t.livestream.frame-hashes:3:12345")], fallback)
    assert forwarded == SourceRecord("t.livestream.frame-hashes", 3, 12345, T0)
    assert source_of([], fallback) == fallback and source_of(None, fallback) == fallback


async def test_forwarded_matches_decide_as_the_agent_path_does(contract):
    """Every message to the agent path vs only the forwarded ones through the
    pre-filter's counted path: the same decisions, ids included."""
    messages = [(b"s1", frames("s1", f"{i:032x}", start=i)) for i in range(20)]
    messages[7] = (b"s1", frames("s1", KNOWN_MD5, start=7))
    messages.append((b"s2", frames("s2", KNOWN_MD5, "2" * 32)))
    everything, screened = make_processor(contract), make_processor(contract)
    forwarded = 0
    for offset, (key, value) in enumerate(messages):
        await everything.handle(FRAME_HASHES, key, value, src(offset))
        if screen(screened, key, value, src(offset)).forward:
            screened.count_input(FRAME_HASHES)
            forwarded += 1
            await screened.handle(FRAME_HASHES, key, value, src(offset), counted=True)
        else:
            screened.count_input(FRAME_HASHES)
    assert forwarded == 2
    assert everything.publisher.decisions and everything.publisher.decisions == screened.publisher.decisions
    assert everything.stats.accepted == screened.stats.accepted


def test_screening_many_at_once_screens_each_as_alone(processor):
    records = [(b"s1", frames("s1", "0" * 32), src(0)), (b"s2", b"{bad", src(1)),
               (b"s3", frames("s3", KNOWN_MD5), src(2)), (b"s4", frames("s4", ALLOWED_MD5), src(3))]
    together = screen_many(processor, records)
    assert together == [screen(processor, *r) for r in records]
    assert [o.forward for o in together] == [False, False, True, False]
    assert together[1].dead_letter is not None
