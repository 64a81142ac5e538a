"""Recordings and policy scoring, without a broker."""

import tempfile

import orjson
import pytest

from streamsafe.brokers.base import free_port
from streamsafe.errors import ConfigError, StreamSafeError
from streamsafe.replay.evaluate import per_kind, score_policies
from streamsafe.replay.pipeline import record_times, replay, replay_contract
from streamsafe.replay.recording import RecordedEvent, Recording, read_recording, write_recording
from streamsafe.replay.scenarios import KINDS, generate_scenarios


def test_generated_scenarios_round_trip_and_cover_every_kind(tmp_path):
    events, labels = generate_scenarios(streams=40, seed=3)
    path = tmp_path / "s.jsonl"
    write_recording(path, events, labels)
    recording = read_recording(path)
    assert len(recording.events) == len(events) and len(recording.labels) == len(labels)
    assert {label.kind for label in labels} == set(KINDS)
    assert generate_scenarios(streams=40, seed=3) == (events, labels)  # deterministic for a seed
    harmful = [label for label in labels if label.harmful]
    assert all(label.harm_start_ms is not None for label in harmful)


def test_bad_lines_are_reported_by_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"topic": "livestream.metadata", "key": "s", "value": {}}\n'
                    "not json\n"
                    '{"topic": "nope", "value": {}}\n'
                    '{"label": {"stream_id": "s", "harmful": "yes"}}\n')
    with pytest.raises(ConfigError) as info:
        read_recording(path)
    assert "line 2" in str(info.value) and "line 3" in str(info.value) and "line 4" in str(info.value)


def decision(stream, action, version="p1", ts=0, priority=None):
    d = {"stream_id": stream, "action": action, "policy_version": version, "event_ts_ms": ts}
    return d | ({"priority": priority} if priority else {})


def test_scores(tmp_path):
    path = tmp_path / "l.jsonl"
    lines = [
        {"topic": "livestream.metadata", "key": "h1", "value": {"ts_ms": 1000}},
        {"topic": "livestream.metadata", "key": "h2", "value": {"ts_ms": 1000}},
        {"label": {"stream_id": "h1", "harmful": True, "expected_action": "block", "harm_start_ms": 2000}},
        {"label": {"stream_id": "h2", "harmful": True, "expected_action": "escalate"}},
        {"label": {"stream_id": "b1", "harmful": False, "expected_action": "none"}},
        {"label": {"stream_id": "b2", "harmful": False, "expected_action": "none"}},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    recording = read_recording(path)
    decisions = [decision("h1", "block", ts=5000), decision("h1", "report", ts=5000),
                 decision("h2", "escalate", ts=4000, priority="P1"),
                 decision("b1", "escalate", priority="P2"),
                 decision("h1", "escalate", version="p2", ts=9000, priority="P0")]
    live, shadow = score_policies(recording, decisions, ["p1", "p2"])
    assert (live.recall_harmful, live.false_block_rate, live.false_escalation_rate) == (1.0, 0.0, 0.5)
    assert live.expected_action_accuracy == 0.75  # b1 escalated although benign
    assert (live.tta_p50_ms, live.tta_p95_ms) == (3000.0, 3000.0)  # h1: 5000-2000, h2: 4000-1000
    assert not live.shadow and shadow.shadow
    assert shadow.recall_harmful == 0.5 and shadow.tta_p50_ms == 7000.0
    assert per_kind(recording, decisions, "p1") == {"unlabelled": {"block": 1, "escalate": 2, "none": 1}}


def events(*times):
    return Recording([RecordedEvent("livestream.metadata", f"s{i}", None if ts is None else
                                    {"schema_version": 1, "stream_id": f"s{i}", "ts_ms": ts})
                      for i, ts in enumerate(times)])


def test_record_times_come_from_the_recording_not_the_clock(monkeypatch):
    recording = events(1_790_000_005_000, 1_790_000_000_000, None, 1_790_000_009_000)
    first = record_times(recording)
    monkeypatch.setattr("time.time", lambda: 4_000_000_000.0)
    assert record_times(recording) == first
    assert first == (1_790_000_000_000, [1_790_000_005_000, 1_790_000_000_000, 1_790_000_000_000,
                                         1_790_000_009_000])


def test_an_implausible_event_time_does_not_move_the_origin():
    recording = events(-1, 1_790_000_005_000, 5, 1_790_000_000_000, 99_999_999_999_999, 1_790_000_000)
    origin, times = record_times(recording)
    assert origin == 1_790_000_000_000  # not -1, 5 or seconds: those records will be rejected
    assert times == [origin, 1_790_000_005_000, origin, origin, origin, origin]


def test_a_malformed_frame_batch_has_no_event_time_rather_than_an_error():
    batch = RecordedEvent("livestream.frame-hashes", "s", {"frames": [{"seq": 1}, "x", {"ts_ms": True}]})
    assert batch.event_ts_ms() is None
    assert RecordedEvent("livestream.frame-hashes", "s", {"frames": 3}).event_ts_ms() is None


def test_replay_topics_keep_recorded_times():
    for spec in replay_contract().values():
        assert spec.config["retention.ms"] == "-1"
        assert int(spec.config["message.timestamp.after.max.ms"]) == 2**63 - 1


def test_replay_removes_its_working_directory_even_when_it_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(StreamSafeError):
        replay(events(1_790_000_000_000), broker_url=f"kafka://127.0.0.1:{free_port()}", timeout_s=5)
    assert not list(tmp_path.glob("streamsafe-replay-*"))


def test_replay_batches_keep_each_streams_order_and_one_topic_per_stream():
    from streamsafe.replay.pipeline import ordered_batches
    from streamsafe.replay.recording import RecordedEvent

    def ev(topic, key):
        return RecordedEvent(topic, key, {})

    inputs = [ev("m", "a"), ev("f", "a"), ev("f", "b"), ev("f", "a"), ev("s", "b"), ev("m", "a"), ev("m", "c")]
    batches = ordered_batches(inputs)
    assert batches == [[0, 2, 6], [1, 3, 4], [5]]
    for batch in batches:
        topics = {}
        for i in batch:
            assert topics.setdefault(inputs[i].key, inputs[i].topic) == inputs[i].topic
    flat = [i for b in batches for i in b]
    for key in "abc":
        mine = [i for i in flat if inputs[i].key == key]
        assert mine == sorted(mine)  # each stream's records in recorded order


def test_account_scenarios_carry_account_labels_that_round_trip(tmp_path):
    from streamsafe.replay.account_scenarios import ACCOUNT_KINDS
    from streamsafe.replay.recording import AccountLabel

    events, labels = generate_scenarios(streams=20, seed=3, accounts=2)
    path = tmp_path / "a.jsonl"
    write_recording(path, events, labels)
    recording = read_recording(path)
    accounts = [label for label in labels if isinstance(label, AccountLabel)]
    assert recording.account_labels == {a.account_id: a for a in accounts}
    assert {a.kind for a in accounts} == set(ACCOUNT_KINDS)
    assert {a.account_id for a in accounts if a.harmful} == {"acct-rep-0", "acct-rep-1", "acct-groomer-0",
                                                             "acct-groomer-1"}
    # the groomer's chat names its author (contract version 2); look-alikes' chat does too
    chats = [e.value for e in events if e.value and e.value.get("actor_account_id")]
    assert {c["schema_version"] for c in chats} == {2}
    assert generate_scenarios(streams=20, seed=3, accounts=2) == (events, labels)


def test_account_scores_count_subjects_and_account_evidence():
    from streamsafe.replay.evaluate import score_accounts
    from streamsafe.replay.recording import AccountLabel

    recording = Recording(account_labels={a.account_id: a for a in (
        AccountLabel("groomer", True, "escalate"), AccountLabel("repeat", True, "escalate"),
        AccountLabel("fan", False, "none"), AccountLabel("drop", False, "none"))})
    decisions = [
        decision("s1", "escalate") | {"subject": {"type": "account", "id": "groomer"}},
        decision("s2", "restrict") | {"evidence": [{"kind": "account", "account_id": "repeat", "ts_ms": 0}]},
        decision("s3", "report") | {"subject": {"type": "account", "id": "fan"}},  # not an action on the account
        decision("s4", "escalate", version="p2") | {"subject": {"type": "account", "id": "drop"}},
    ]
    live, other = score_accounts(recording, decisions, ["p1", "p2"])
    assert (live.recall_accounts, live.false_action_rate_accounts, live.account_decisions) == (1.0, 0.0, 2)
    assert (other.recall_accounts, other.false_action_rate_accounts, other.account_decisions) == (0.0, 0.5, 1)
