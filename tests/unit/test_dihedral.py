"""Mirrored and turned frames: a frame's dihedral variants are matched in the same index
call as every other hash, count as the policy says, and the decision names the transform;
frames without variants match exactly as before (no broker)."""

from __future__ import annotations

import random

import fastjsonschema
import jsonschema
import orjson
import pytest

from streamsafe.agents.clock import RecordClock
from streamsafe.agents.records import RecordHandler
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.contract import FRAME_HASHES, FRAME_MATCHES
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder, decode_frame_matches
from streamsafe.events.encode import encode_frame_matches
from streamsafe.events.models import BankEntry, Frame
from streamsafe.hashing.frames import hash_image_file
from streamsafe.matching.banks import HashBanks
from streamsafe.matching.dihedral import TRANSFORMS, VARIANTS, shown_as
from streamsafe.policy.loader import load_policy
from streamsafe.policy.policyset import PolicySet
from streamsafe.review.incident import Incident
from streamsafe.scoring.state import MatchRef, StreamState
from tests.unit.test_hashing import REFERENCE, dihedral_rows, needs_reference

RNG = random.Random(18)
ENTRY = f"{RNG.getrandbits(256):064x}"
T0 = 1_764_324_000_000
POLICY = load_policy()


def near(hex_hash: str, bits: int) -> str:
    value = int(hex_hash, 16)
    for b in RNG.sample(range(256), bits):
        value ^= 1 << b
    return f"{value:064x}"


def random_hash() -> str:
    return f"{RNG.getrandbits(256):064x}"


def frame(seq: int = 1, pdq: str | None = None, quality: int = 90, **variants: str) -> Frame:
    """A frame as shown (``pdq``: unrelated to the bank unless given) with its seven other
    variants, random unless given."""
    return Frame(seq, T0 + seq, pdq or random_hash(), quality,
                 pdq_dihedral={v: variants.get(v) or random_hash() for v in VARIANTS})


def banks_with(*entries: tuple[str, str, str]) -> HashBanks:
    banks = HashBanks()
    banks.add_many([BankEntry(entry_id, bank, "pdq", digest) for entry_id, bank, digest in entries])
    return banks


def test_the_transforms_are_metas_in_metas_order_and_quarter_turns_invert():
    assert TRANSFORMS == ("identity", "rotate90", "rotate180", "rotate270", "flipx", "flipy", "flip_plus1",
                          "flip_minus1")
    assert [shown_as(v) for v in VARIANTS] == ["rotate270", "rotate180", "rotate90", "flipx", "flipy",
                                               "flip_plus1", "flip_minus1"]


def test_a_variant_match_names_how_the_frame_shows_the_entry():
    banks = banks_with(("ncmec:1", "ncmec", ENTRY))
    # the frame is the entry's picture turned 90 degrees counterclockwise: turning it a further
    # 270 degrees (its rotate270 variant) gives the entry back
    turned = frame(rotate270=near(ENTRY, 3))
    (match,) = banks.match_frame(turned, POLICY.transforms_of)
    assert (match.entry_id, match.distance, match.transform, match.quality) == ("ncmec:1", 3, "rotate90", 90)
    assert banks.match_frame(turned) == []  # variants count only when the caller says which


def test_the_policy_chooses_which_transforms_count_per_bank():
    partner = random_hash()
    banks = banks_with(("ncmec:1", "ncmec", ENTRY), ("px:1", "partner-x", partner))
    mirrored = frame(flipy=near(ENTRY, 2), flipx=near(partner, 2))
    assert [(m.entry_id, m.transform) for m in banks.match_frame(mirrored, POLICY.transforms_of)] == [
        ("ncmec:1", "flipy")]  # default: every transform for authority banks, identity only elsewhere
    custom = load_policy("""
version: t
banks: {ncmec: authority}
matching: {bank_transforms: {partner-x: [identity, flipx], ncmec: [identity, rotate90]}}
rules: [{name: r, when: {risk: {gte: 0.9}}, then: [monitor]}]
""")
    assert [(m.entry_id, m.transform) for m in banks.match_frame(mirrored, custom.transforms_of)] == [
        ("px:1", "flipx")]


def test_one_match_per_frame_and_entry_through_its_closest_hash():
    banks = banks_with(("ncmec:1", "ncmec", ENTRY))
    closer_as_mirror = frame(pdq=near(ENTRY, 12), flipy=near(ENTRY, 2), flipx=near(ENTRY, 5))
    assert [(m.distance, m.transform) for m in banks.match_frame(closer_as_mirror, POLICY.transforms_of)] == [
        (2, "flipy")]
    symmetric = frame(pdq=ENTRY, flipy=ENTRY)  # a picture that is its own mirror image
    assert [(m.distance, m.transform) for m in banks.match_frame(symmetric, POLICY.transforms_of)] == [(0, None)]


def test_variants_are_looked_up_in_the_same_index_call_as_every_other_hash(monkeypatch):
    banks = banks_with(("ncmec:1", "ncmec", ENTRY))
    calls: list[int] = []
    query_batch = banks._pdq.query_batch

    def counting(hashes, radius):
        calls.append(len(hashes))
        return query_batch(hashes, radius)

    monkeypatch.setattr(banks._pdq, "query_batch", counting)
    groups = [[Frame(1, T0, random_hash(), 90), frame(2, flipy=near(ENTRY, 1))],
              [Frame(3, T0, near(ENTRY, 4), 90), frame(4, quality=10, flipy=ENTRY)]]  # too poor to match
    matches = banks.match_frame_groups(groups, POLICY.transforms_of)
    assert calls == [1 + 8 + 1]
    assert [[(m.frame_seq, m.transform) for m in g] for g in matches] == [[(2, "flipy")], [(3, None)]]


@pytest.mark.parametrize("seed", range(5))
def test_frames_without_variants_match_exactly_as_before(seed):
    rng = random.Random(seed)
    stored = [f"{rng.getrandbits(256):064x}" for _ in range(50)]
    banks = banks_with(*((f"e:{i}", rng.choice(["ncmec", "partner-x", "platform-allow"]), h)
                         for i, h in enumerate(stored)))
    groups = [[Frame(rng.randrange(9), T0, near(rng.choice(stored), rng.randrange(40)), rng.choice([10, 60, 90]),
                     md5=rng.choice([None, "0" * 32])) for _ in range(rng.randrange(1, 6))] for _ in range(20)]
    assert banks.match_frame_groups(groups, POLICY.transforms_of) == banks.match_frame_groups(groups)


def test_transforms_survive_the_state_and_incident_tables():
    ref = MatchRef("ncmec", "ncmec:1", "pdq", 3, 7, T0, "flipy")
    state = StreamState().with_matches([ref, MatchRef("ncmec", "ncmec:2", "pdq", 4, 8, T0)], [])
    assert StreamState.from_record(state.to_record()) == state
    assert state.to_record()["ms"] == [["ncmec", "ncmec:1", "pdq", 3, 7, T0, "flipy"],
                                       ["ncmec", "ncmec:2", "pdq", 4, 8, T0]]  # a row without one as before
    banks = banks_with(("ncmec:1", "ncmec", ENTRY))
    matches = banks.match_frame(frame(7, flipy=near(ENTRY, 3)), POLICY.transforms_of)
    incident = Incident().with_matches(matches, {7: {"pdq": "ab" * 32}}, 0)
    assert Incident.from_record(incident.to_record()) == incident and incident.frames[0].transform == "flipy"


# -- the whole per-record path, both ways in -----------------------------------------------------------


def make_handler(contract, entry: str = ENTRY) -> RecordHandler:
    return RecordHandler(InputDecoder(contract, 65536), banks_with(("ncmec:1", "ncmec", entry)),
                         PolicySet(load_policy()), {}, InMemoryPublisher(), clock=RecordClock())


def message(stream: str, *frames: Frame) -> bytes:
    return orjson.dumps({"schema_version": 2, "stream_id": stream, "frames": [
        {"seq": f.seq, "ts_ms": f.ts_ms, "pdq": f.pdq, "pdq_quality": f.pdq_quality, "pdq_dihedral": f.pdq_dihedral}
        for f in frames]})


async def test_a_mirrored_copy_is_blocked_reported_and_named_through_either_path(contract):
    value = message("s1", frame(1), frame(2, flipy=near(ENTRY, 4)))
    source = SourceRecord(FRAME_HASHES, 3, 40, T0 + 5)
    agent, prefilter = make_handler(contract), make_handler(contract)
    await agent.handle(FRAME_HASHES, b"s1", value, source)
    (screened,) = prefilter.screen.screen([(b"s1", value, source)])
    forwarded = encode_frame_matches(screened.matches, source)
    record = orjson.loads(forwarded)
    fastjsonschema.compile(dict(contract[FRAME_MATCHES].schema))(record)
    assert record["schema_version"] == 2 and record["matches"][0]["transform"] == "flipy"
    assert "pdq_dihedral" not in forwarded.decode()  # the agent needs the matches, not the variants
    assert decode_frame_matches(forwarded) == (screened.matches, source)
    await prefilter.handle_forwarded(b"s1", forwarded, SourceRecord(FRAME_MATCHES, 3, 1, T0 + 5))
    assert agent.publisher.decisions == prefilter.publisher.decisions  # ids included
    block = next(d for d in agent.publisher.decisions if d.action == "block")
    (evidence,) = block.to_record()["evidence"]
    assert evidence | {"ts_ms": 0} == {"kind": "hash_match", "ts_ms": 0, "signal_type": "pdq", "bank": "ncmec",
                                       "entry_id": "ncmec:1", "distance": 4, "frame_seq": 2, "transform": "flipy"}
    fastjsonschema.compile(dict(contract["enforcement.actions"].schema))(block.to_record())
    (report,) = agent.publisher.reports
    assert [(m["frame_seq"], m["transform"]) for m in report.record["hash_matches"]] == [(2, "flipy")]
    jsonschema.validate(report.record, contract["enforcement.reports"].schema, cls=jsonschema.Draft7Validator)


async def test_a_decision_without_variants_is_what_it_was(contract):
    plain = orjson.dumps({"schema_version": 1, "stream_id": "s1", "frames": [
        {"seq": 2, "ts_ms": T0 + 2, "pdq": near(ENTRY, 4), "pdq_quality": 90}]})
    handler = make_handler(contract)
    await handler.handle(FRAME_HASHES, b"s1", plain, SourceRecord(FRAME_HASHES, 3, 40, T0 + 5))
    block = next(d for d in handler.publisher.decisions if d.action == "block")
    assert "transform" not in block.to_record()["evidence"][0]
    (screened,) = handler.screen.screen([(b"s1", plain, SourceRecord(FRAME_HASHES, 3, 40, T0 + 5))])
    assert orjson.loads(encode_frame_matches(screened.matches, SourceRecord(FRAME_HASHES, 3, 40, T0)))[
        "schema_version"] == 1


# -- Meta's reference pictures --------------------------------------------------------------------------


@needs_reference
def test_each_orientation_of_metas_bridge_matches_the_original_and_names_its_transform():
    rows = dihedral_rows()
    original = hash_image_file(REFERENCE / rows[0]["path"])
    banks = banks_with(("ncmec:bridge", "ncmec", original.pdq))
    for row, transform in zip(rows, TRANSFORMS, strict=True):
        shown = hash_image_file(REFERENCE / row["path"], dihedral=True)
        as_sent = Frame(1, T0, shown.pdq, shown.pdq_quality, pdq_dihedral=shown.pdq_dihedral)
        matches = banks.match_frame(as_sent, POLICY.transforms_of)
        assert [(m.entry_id, m.transform) for m in matches] == [
            ("ncmec:bridge", None if transform == "identity" else transform)], row["path"]
        assert POLICY.is_strong(matches[0].distance), (row["path"], matches[0].distance)
        without_variants = banks.match_frame(Frame(1, T0, shown.pdq, shown.pdq_quality))
        assert bool(without_variants) == (transform == "identity"), row["path"]  # what variants fix
