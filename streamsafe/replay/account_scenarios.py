"""Labelled scenarios for risk that follows accounts (``streamsafe simulate --scenarios --accounts N``).

Each pattern comes with its benign look-alike, and labels at both levels: every stream
(``{"label": {"stream_id", ...}}``) and every account (``{"label": {"account_id", ...}}``).

=====================  =======  ==========================================================
kind                   harmful  what happens
=====================  =======  ==========================================================
repeat_offender        yes      a known-abuse hash blocks a broadcaster's stream; minutes
                                later the same broadcaster starts a new one (expected:
                                escalate the new stream at its start)
network_drop_restart   no       an adult's stream drops and restarts a minute later;
                                nothing was ever wrong
groomer_viewer         yes      one viewer sends grooming messages into the public streams of
                                three young, unverified broadcasters, an hour apart (each
                                stream sees one or two; expected: escalate the viewer)
popular_chatters       no       viewers of popular, age-verified streamers chat in many of
                                their streams; the text classifier now and then misfires
=====================  =======  ==========================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA
from streamsafe.replay.recording import AccountLabel, Label, RecordedEvent

__all__ = ["ACCOUNT_KINDS", "generate_account_scenarios"]

ACCOUNT_KINDS = ("repeat_offender", "network_drop_restart", "groomer_viewer", "popular_chatters")
MINUTE = 60_000


@dataclass
class _World:
    rng: random.Random
    bank: list[str]
    events: list[RecordedEvent]
    labels: list[Label]
    accounts: list[AccountLabel]

    def started(self, stream: str, broadcaster: str, at: int, **context: object) -> None:
        self.events.append(RecordedEvent(METADATA, stream, {
            "schema_version": 1, "event": "stream.started", "stream_id": stream, "ts_ms": at,
            "broadcaster_id": broadcaster, **context}))

    def ended(self, stream: str, broadcaster: str, at: int) -> None:
        self.events.append(RecordedEvent(METADATA, stream, {
            "schema_version": 1, "event": "stream.ended", "stream_id": stream, "ts_ms": at,
            "broadcaster_id": broadcaster}))

    def frames(self, stream: str, start: int, count: int, known_from: int | None = None) -> None:
        for seq in range(count):
            known = known_from is not None and seq >= known_from
            pdq = self.rng.choice(self.bank) if known else f"{self.rng.getrandbits(256):064x}"
            self.events.append(RecordedEvent(FRAME_HASHES, stream, {
                "schema_version": 1, "stream_id": stream, "frames": [{
                    "seq": seq, "ts_ms": start + seq * 2_000, "pdq": pdq, "pdq_quality": 95}]}))

    def chat(self, stream: str, viewer: str, at: int, score: float) -> None:
        self.events.append(RecordedEvent(CLASSIFIER_SIGNALS, stream, {
            "schema_version": 2, "stream_id": stream, "classifier": "grooming_text", "model_version": "gt-2026.10",
            "score": round(score, 3), "ts_ms": at, "evidence": {"chat_message_id": f"msg-{stream}-{at}"},
            "actor_account_id": viewer}))


def _repeat_offender(w: _World, i: int, at: int) -> None:
    broadcaster, first, second = f"acct-rep-{i}", f"scn-rep-{i}-a", f"scn-rep-{i}-b"
    w.started(first, broadcaster, at, visibility="public", account_age_days=w.rng.randint(1, 400))
    w.frames(first, at, 10, known_from=5)
    w.ended(first, broadcaster, at + 25_000)
    restart = at + w.rng.randint(1, 10) * MINUTE
    w.started(second, broadcaster, restart, visibility="public", account_age_days=w.rng.randint(1, 400))
    w.frames(second, restart, 10)
    w.ended(second, broadcaster, restart + 25_000)
    w.labels += [Label(first, True, "block", "repeat_offender", at + 10_000),
                 Label(second, True, "escalate", "repeat_offender_restart", restart)]
    w.accounts.append(AccountLabel(broadcaster, True, "escalate", "repeat_offender"))


def _network_drop_restart(w: _World, i: int, at: int) -> None:
    broadcaster, first, second = f"acct-drop-{i}", f"scn-drop-{i}-a", f"scn-drop-{i}-b"
    context = {"visibility": "public", "account_age_days": w.rng.randint(200, 3000), "age_verified": True}
    w.started(first, broadcaster, at, **context)
    w.frames(first, at, 10)
    w.ended(first, broadcaster, at + 20_000)
    w.started(second, broadcaster, at + MINUTE, **context)
    w.frames(second, at + MINUTE, 10)
    w.ended(second, broadcaster, at + MINUTE + 20_000)
    w.labels += [Label(stream, False, "none", "network_drop_restart") for stream in (first, second)]
    w.accounts.append(AccountLabel(broadcaster, False, "none", "network_drop_restart"))


def _groomer_viewer(w: _World, i: int, at: int) -> None:
    viewer = f"acct-groomer-{i}"
    for j in range(3):
        stream, start = f"scn-groom-{i}-{j}", at + j * 60 * MINUTE
        w.started(stream, f"acct-young-{i}-{j}", start, visibility="public", account_age_days=w.rng.randint(3, 60),
                  age_verified=False)
        w.frames(stream, start, 5)
        for k in range(w.rng.randint(1, 2)):
            w.chat(stream, viewer, start + (3 + k) * MINUTE, w.rng.uniform(0.82, 0.97))
        w.ended(stream, f"acct-young-{i}-{j}", start + 10 * MINUTE)
        w.labels.append(Label(stream, True, "escalate", "groomer_viewer_target", start + 3 * MINUTE))
    w.accounts.append(AccountLabel(viewer, True, "escalate", "groomer_viewer"))


def _popular_chatters(w: _World, i: int, at: int) -> None:
    viewers = [f"acct-fan-{i}-{v}" for v in range(4)]
    for j in range(4):
        stream, start, streamer = f"scn-popular-{i}-{j}", at + j * 30 * MINUTE, f"acct-star-{i}-{j % 2}"
        w.started(stream, streamer, start, visibility="public", account_age_days=w.rng.randint(500, 3000),
                  age_verified=True, viewer_count=w.rng.randint(5_000, 50_000))
        w.frames(stream, start, 5)
        for v, viewer in enumerate(viewers):
            misfire = w.rng.random() < 0.3
            w.chat(stream, viewer, start + (2 + v) * MINUTE, w.rng.uniform(0.8, 0.9) if misfire
                   else w.rng.uniform(0.0, 0.4))
        w.ended(stream, streamer, start + 10 * MINUTE)
        w.labels.append(Label(stream, False, "none", "popular_chatters"))
    w.accounts += [AccountLabel(v, False, "none", "popular_chatters") for v in viewers]


def generate_account_scenarios(per_kind: int, seed: int, start_ms: int, bank: list[str]
                               ) -> tuple[list[RecordedEvent], list[Label], list[AccountLabel]]:
    """``per_kind`` instances of each kind; ``bank``: the known PDQs the recording's bank holds."""
    rng = random.Random(seed * 7919 + 1)
    world = _World(rng, bank, [], [], [])
    builders = (_repeat_offender, _network_drop_restart, _groomer_viewer, _popular_chatters)
    for i in range(per_kind):
        for builder in builders:
            builder(world, i, start_ms + rng.randint(0, 30) * MINUTE)
    return world.events, world.labels, world.accounts
