"""Matches stepped on in the pre-filter's process, without a broker: only for a partition
this worker's agents own (never while rebalancing or recovering), with the table writes
on the forwarded record's partition, the same decisions the agent path makes, and the
forward's copy skipped once -- stepped on again after a rebalance."""

from types import SimpleNamespace

from aiokafka import ConsumerRecord, TopicPartition
from faust.streams import current_event
from faust.types import TP

from streamsafe.agents.inprocess import InProcessMatches
from streamsafe.agents.prefilter import FramePreFilter
from streamsafe.events.contract import FRAME_HASHES
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.encode import encode_frame_matches
from streamsafe.settings import Settings
from tests.unit.test_prefilter import KNOWN_MD5, T0, RecordingTopic, frames, make_handler, screen, src

MATCHES = "streamsafe.frame-matches"


class WrittenOn(dict):
    """A state table that notes the partition of Faust's current event at each write."""

    def __init__(self):
        super().__init__()
        self.partitions = []

    def __setitem__(self, key, value):
        event = current_event()
        self.partitions.append(None if event is None else (event.message.topic, event.message.partition))
        super().__setitem__(key, value)


class App:
    """What ownership is read from: Faust's rebalance flag and count, its flow, its active assignment."""

    def __init__(self, *partitions):
        self.rebalancing = False
        self.rebalancing_count = 1
        self.flowing = True
        self.flow_control = SimpleNamespace(is_active=lambda: self.flowing)
        self.actives = {TP(MATCHES, p) for p in partitions} | {TP("streamsafe.timers", 9)}
        self.assignor = SimpleNamespace(assigned_actives=lambda: set(self.actives))


def setup(contract, *owned):
    handler = make_handler(contract)
    handler.states = WrittenOn()
    in_process = InProcessMatches(App(*owned), MATCHES, handler)
    handler.skip_forwarded = in_process.take_copy
    return handler, in_process


def blocks(handler):
    return [d for d in handler.publisher.decisions if d.action == "block"]


def counted(handler, applied):
    return handler.metrics.registry.get_sample_value("streamsafe_prefilter_matches_total", {"applied": applied})


async def test_an_owned_match_is_stepped_on_here_with_writes_on_its_partition_and_its_copy_skipped(contract):
    handler, in_process = setup(contract, 3)
    matches = screen(handler, b"s1", frames("s1", KNOWN_MD5), src(4)).matches
    outcome = in_process.apply(matches, src(4))
    assert outcome is not None and [d.action for d in outcome.decisions if d.action == "block"] == ["block"]
    assert handler.states.partitions == [(MATCHES, 3)] and current_event() is None
    await handler.publish_applied(outcome, b"s1", b"raw", src(4))
    assert len(blocks(handler)) == 1 and counted(handler, "in_process") == 1
    writes = handler.stats.state_writes

    await handler.handle_forwarded(b"s1", encode_frame_matches(matches, src(4)), src(0))  # its copy: skipped
    assert handler.stats.state_writes == writes and len(blocks(handler)) == 1
    assert counted(handler, "by_agent") == 0 and not in_process.pending


async def test_the_same_decisions_as_the_agent_path_ids_included(contract):
    messages = [(b"s1", frames("s1", f"{i:032x}", start=i)) for i in range(10)]
    messages[4] = (b"s1", frames("s1", KNOWN_MD5, start=4))
    messages.append((b"s2", frames("s2", KNOWN_MD5, "2" * 32)))
    by_agent, here = make_handler(contract), setup(contract, 3)[1]
    for offset, (key, value) in enumerate(messages):
        await by_agent.handle(FRAME_HASHES, key, value, src(offset))
        matches = screen(here.handler, key, value, src(offset)).matches
        if matches is not None:
            await here.handler.publish_applied(here.apply(matches, src(offset)), key, value, src(offset))
    assert blocks(by_agent) and here.handler.publisher.decisions == by_agent.publisher.decisions


async def test_a_partition_not_owned_or_a_rebalance_leaves_the_match_to_its_forward(contract):
    handler, in_process = setup(contract, 3)
    app = in_process.app
    matches = screen(handler, b"s1", frames("s1", KNOWN_MD5), src(4)).matches
    assert in_process.apply(matches, SourceRecord(FRAME_HASHES, 5, 4, T0 + 4)) is None  # another worker's agents own it
    app.rebalancing = True
    assert in_process.apply(matches, src(4)) is None
    app.rebalancing, app.flowing = False, False  # assigned, tables still recovering
    assert in_process.apply(matches, src(4)) is None
    assert handler.states == {} and handler.states.partitions == []
    await handler.handle_forwarded(b"s1", encode_frame_matches(matches, src(4)), src(0))
    assert len(blocks(handler)) == 1 and counted(handler, "by_agent") == 1
    assert handler.states.partitions == [None]  # no event here; Faust's agent sets the real one


async def test_after_a_rebalance_a_copy_is_stepped_on_again_and_decides_nothing_twice(contract):
    handler, in_process = setup(contract, 3)
    matches = screen(handler, b"s1", frames("s1", KNOWN_MD5), src(4)).matches
    await handler.publish_applied(in_process.apply(matches, src(4)), b"s1", b"raw", src(4))
    in_process.app.rebalancing_count += 1  # a rebalance came and went; the partition stayed
    await handler.handle_forwarded(b"s1", encode_frame_matches(matches, src(4)), src(0))
    assert counted(handler, "by_agent") == 1 and len(blocks(handler)) == 1


async def test_the_prefilter_publishes_an_owned_match_before_forwarding_it(contract):
    handler, in_process = setup(contract, 3)
    now = [0.0]
    prefilter = FramePreFilter(Settings(), handler, ready=None, in_process=in_process, clock=lambda: now[0])
    prefilter._forward_to = forwards = RecordingTopic(lambda: len(handler.publisher.decisions))
    prefilter._dead_letter_to = RecordingTopic(lambda: 0)
    tp = TopicPartition(FRAME_HASHES, 3)
    records = [ConsumerRecord(FRAME_HASHES, 3, i, T0 + i, 0, f"s{i}".encode(),
                              frames(f"s{i}", KNOWN_MD5 if i in (2, 5) else "0" * 32), None, 0, 0, [])
               for i in range(8)]
    await prefilter.screen_batch({tp: records})
    assert [d.stream_id for d in blocks(handler)] == ["s2", "s5"]
    assert [key for _, key in forwards.sent] == [b"s2", b"s5"]  # the durable copies, still sent
    assert all(decided >= 2 for decided, _ in forwards.sent)  # each after the slice's decisions went out
    assert counted(handler, "in_process") == 2
    await prefilter.deliveries.settled()
