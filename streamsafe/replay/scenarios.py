"""Labelled synthetic scenarios for backtesting policies (``streamsafe simulate --scenarios``).

Each kind is a plausible live stream with its ground truth:

==========================  =======  ===============  ==============================================
kind                        harmful  expected action  what happens
==========================  =======  ===============  ==============================================
known_hash                  yes      block            frames hit a PDQ in an authority bank
novel_abuse                 yes      block            minor presence and nudity rise together
grooming                    yes      escalate         grooming text on a private, new account's stream
weak_hash_repeated          yes      escalate         near-threshold PDQ matches on several frames
adult_nudity                no       none             nudity, no minor, an age-verified account
minors_no_nudity            no       none             minors on camera, nothing else
noisy_spike                 no       none             one classifier spikes once
coordinated_false_reports   no       none             a burst of reports from a brigade
benign                      no       none             ordinary stream
==========================  =======  ===============  ==============================================

Event times are synthetic and deterministic for a seed; streams overlap in time.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streamsafe.events.contract import (
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    HASHBANK_ENTRIES,
    METADATA,
    USER_REPORTS,
)
from streamsafe.replay.account_scenarios import generate_account_scenarios
from streamsafe.replay.recording import AccountLabel, Label, RecordedEvent

__all__ = ["KINDS", "generate_scenarios"]

FRAME_EVERY_MS = 2_000
SIGNAL_EVERY_MS = 6_000
DURATION_MS = 90_000


def _flip(hex_hash: str, bits: list[int]) -> str:
    value = int(hex_hash, 16)
    for b in bits:
        value ^= 1 << (255 - b)
    return f"{value:064x}"


@dataclass
class _Stream:
    rng: random.Random
    stream_id: str
    start_ms: int
    bank_pdq: str
    events: list[RecordedEvent]

    def meta(self, event: str, at: int, **context: object) -> None:
        self.events.append(RecordedEvent(METADATA, self.stream_id, {
            "schema_version": 1, "event": event, "stream_id": self.stream_id, "ts_ms": at,
            "broadcaster_id": f"acct-{zlib.crc32(self.stream_id.encode()) % 10**6}", **context}))

    def frame(self, seq: int, at: int, pdq: str | None = None) -> None:
        self.events.append(RecordedEvent(FRAME_HASHES, self.stream_id, {
            "schema_version": 1, "stream_id": self.stream_id, "frames": [{
                "seq": seq, "ts_ms": at, "pdq": pdq or f"{self.rng.getrandbits(256):064x}",
                "pdq_quality": self.rng.randint(70, 100), "md5": f"{self.rng.getrandbits(128):032x}"}]}))

    def signal(self, classifier: str, score: float, at: int, seq: int) -> None:
        evidence: dict[str, object] = ({"chat_message_id": f"msg-{self.stream_id}-{seq}"}
                                       if classifier == "grooming_text" else {"frame_seq": seq})
        self.events.append(RecordedEvent(CLASSIFIER_SIGNALS, self.stream_id, {
            "schema_version": 1, "stream_id": self.stream_id, "classifier": classifier,
            "model_version": f"{classifier}-2026.10", "score": round(min(max(score, 0.0), 1.0), 3),
            "ts_ms": at, "evidence": evidence}))

    def report(self, reporter: str, at: int, category: str = "child_endangerment") -> None:
        self.events.append(RecordedEvent(USER_REPORTS, self.stream_id, {
            "schema_version": 1, "stream_id": self.stream_id, "category": category, "ts_ms": at,
            "reporter_id": reporter}))

    def timeline(self) -> Iterator[tuple[int, int]]:
        for seq, offset in enumerate(range(0, DURATION_MS, FRAME_EVERY_MS)):
            yield seq, self.start_ms + offset

    def noise(self, seq: int, at: int, **scores: float) -> None:
        if (at - self.start_ms) % SIGNAL_EVERY_MS == 0:
            for classifier, level in scores.items():
                self.signal(classifier, self.rng.uniform(0, level), at, seq)


Builder = Callable[[_Stream], int | None]  # returns when harm starts (None: benign)


def _known_hash(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility="public", account_age_days=s.rng.randint(1, 900))
    harm = None
    for seq, at in s.timeline():
        if seq >= 10:
            harm = harm or at
            s.frame(seq, at, _flip(s.bank_pdq, s.rng.sample(range(256), s.rng.randint(0, 8))))
        else:
            s.frame(seq, at)
        s.noise(seq, at, nudity=0.5, minor_presence=0.5)
    return harm


def _novel_abuse(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility=s.rng.choice(["public", "private"]),
           account_age_days=s.rng.randint(0, 60), age_verified=False)
    harm = None
    for seq, at in s.timeline():
        s.frame(seq, at)
        if (at - s.start_ms) % SIGNAL_EVERY_MS == 0:
            rising = min(0.97, 0.3 + 0.05 * seq)
            if rising > 0.6:
                harm = harm or at
            s.signal("minor_presence", rising + s.rng.uniform(-0.03, 0.03), at, seq)
            s.signal("nudity", rising + s.rng.uniform(-0.05, 0.02), at, seq)
    return harm


def _grooming(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility="private", account_age_days=s.rng.randint(0, 20))
    harm = None
    for seq, at in s.timeline():
        s.frame(seq, at)
        if (at - s.start_ms) % SIGNAL_EVERY_MS == 0:
            score = 0.2 if seq < 8 else s.rng.uniform(0.82, 0.96)
            if score > 0.8:
                harm = harm or at
            s.signal("grooming_text", score, at, seq)
    return harm


def _weak_hash_repeated(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility="public", account_age_days=s.rng.randint(30, 900))
    harm = None
    for seq, at in s.timeline():
        if 12 <= seq < 18:
            harm = harm or at
            s.frame(seq, at, _flip(s.bank_pdq, s.rng.sample(range(256), s.rng.randint(24, 29))))
        else:
            s.frame(seq, at)
    return harm


def _adult_nudity(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility="public", account_age_days=s.rng.randint(400, 3000),
           age_verified=True)
    for seq, at in s.timeline():
        s.frame(seq, at)
        if (at - s.start_ms) % SIGNAL_EVERY_MS == 0:
            s.signal("nudity", s.rng.uniform(0.85, 0.99), at, seq)
            s.signal("minor_presence", s.rng.uniform(0.0, 0.25), at, seq)
    return None


def _minors_no_nudity(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility="public", account_age_days=s.rng.randint(100, 2000))
    for seq, at in s.timeline():
        s.frame(seq, at)
        if (at - s.start_ms) % SIGNAL_EVERY_MS == 0:
            s.signal("minor_presence", s.rng.uniform(0.8, 0.98), at, seq)
            s.signal("nudity", s.rng.uniform(0.0, 0.2), at, seq)
    return None


def _noisy_spike(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility="public", account_age_days=s.rng.randint(100, 2000))
    spike_at = s.rng.randint(3, 40)
    classifier = s.rng.choice(["nudity", "minor_presence", "grooming_text", "audio_distress"])
    for seq, at in s.timeline():
        s.frame(seq, at)
        s.noise(seq, at, nudity=0.3, minor_presence=0.3)
        if seq == spike_at:
            s.signal(classifier, s.rng.uniform(0.9, 0.99), at, seq)
    return None


def _coordinated_false_reports(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility="public", account_age_days=s.rng.randint(100, 2000))
    burst = s.start_ms + 30_000
    for i in range(6):
        s.report(f"brigade-{s.rng.randint(0, 10**6)}", burst + i * 7_000, "child_sexual_abuse")
    for seq, at in s.timeline():
        s.frame(seq, at)
        s.noise(seq, at, nudity=0.3, minor_presence=0.4)
    return None


def _benign(s: _Stream) -> int | None:
    s.meta("stream.started", s.start_ms, visibility=s.rng.choice(["public", "private"]),
           account_age_days=s.rng.randint(0, 3000))
    for seq, at in s.timeline():
        s.frame(seq, at)
        s.noise(seq, at, nudity=0.4, minor_presence=0.5, grooming_text=0.3)
    return None


KINDS: dict[str, tuple[Builder, bool, str, float]] = {
    # kind: (builder, harmful, expected action, share of streams)
    "known_hash": (_known_hash, True, "block", 0.08),
    "novel_abuse": (_novel_abuse, True, "block", 0.08),
    "grooming": (_grooming, True, "escalate", 0.08),
    "weak_hash_repeated": (_weak_hash_repeated, True, "escalate", 0.06),
    "adult_nudity": (_adult_nudity, False, "none", 0.10),
    "minors_no_nudity": (_minors_no_nudity, False, "none", 0.10),
    "noisy_spike": (_noisy_spike, False, "none", 0.10),
    "coordinated_false_reports": (_coordinated_false_reports, False, "none", 0.06),
    "benign": (_benign, False, "none", 0.34),
}


def generate_scenarios(streams: int = 100, seed: int = 7, start_ms: int = 1_790_000_000_000, accounts: int = 0
                       ) -> tuple[list[RecordedEvent], list[Label | AccountLabel]]:
    """Bank entries first (the known material), then every stream's events in time order;
    ``accounts``: that many of each account scenario (``replay/account_scenarios.py``) too,
    with their account labels after the stream labels."""
    rng = random.Random(seed)
    bank = [f"{rng.getrandbits(256):064x}" for _ in range(8)]
    events: list[RecordedEvent] = [
        RecordedEvent(HASHBANK_ENTRIES, f"ncmec:scenario-{i}", {
            "schema_version": 1, "bank": "ncmec", "signal_type": "pdq", "hash": pdq, "quality": 100,
            "label": f"scenario-case-{i}", "source": "scenario-generator"})
        for i, pdq in enumerate(bank)
    ]
    names = list(KINDS)
    counts = {k: max(1, round(streams * KINDS[k][3])) for k in names}
    labels: list[Label | AccountLabel] = []
    stream_events: list[RecordedEvent] = []
    index = 0
    for kind in names:
        builder, harmful, expected, _ = KINDS[kind]
        for _ in range(counts[kind]):
            stream_id = f"scn-{kind.replace('_', '-')}-{index:04d}"
            stream = _Stream(random.Random(rng.getrandbits(64)), stream_id,
                             start_ms + rng.randint(0, 120_000) // FRAME_EVERY_MS * FRAME_EVERY_MS,
                             rng.choice(bank), [])
            harm_start = builder(stream)
            stream.meta("stream.ended", stream.start_ms + DURATION_MS)
            stream_events.extend(stream.events)
            labels.append(Label(stream_id, harmful, expected, kind, harm_start))
            index += 1
    account_labels: list[AccountLabel] = []
    if accounts:
        more, stream_labels, account_labels = generate_account_scenarios(accounts, seed, start_ms, bank)
        stream_events += more
        labels += stream_labels
    stream_events.sort(key=lambda e: (e.event_ts_ms() or 0, e.key or ""))
    return events + stream_events, labels + account_labels
