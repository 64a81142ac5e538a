"""Typed input events, built from messages that already passed the contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from streamsafe.events.values import EvidenceRef

__all__ = ["AccountFinding", "Appeal", "BankEntry", "ClassifierSignal", "Frame", "FrameBatch",
           "FrameMatches", "Match", "ReviewVerdict", "StreamMetadata", "TimerTick", "UserReport"]


@dataclass(frozen=True, slots=True)
class BankEntry:
    """One known hash in a named bank (a ``hashbank.entries`` record, or a hash-list line)."""

    entry_id: str
    bank: str
    signal_type: str
    hash: str
    label: str | None = None
    quality: int | None = None
    added_ms: int | None = None  # when the entry was added to its bank (the record's own time), if known


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled frame: its place in the stream and whichever hashes the producer sent.
    ``pdq_dihedral`` maps dihedral transforms (Meta's names, see
    :mod:`streamsafe.matching.dihedral`) to the PDQ of the frame so transformed."""

    seq: int
    ts_ms: int
    pdq: str | None = None
    pdq_quality: int | None = None
    md5: str | None = None
    sha256: str | None = None
    pdq_dihedral: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class FrameBatch:
    stream_id: str
    frames: tuple[Frame, ...]

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> FrameBatch:
        return cls(value["stream_id"], tuple(Frame(**f) for f in value["frames"]))


@dataclass(frozen=True, slots=True)
class Match:
    """One frame matched one bank entry. ``transform`` (None: the frame as it is) says how
    the frame shows the entry's picture, when one of its dihedral variants matched."""

    bank: str
    entry_id: str
    signal_type: str
    distance: int
    frame_seq: int
    frame_ts_ms: int
    quality: int | None = None
    transform: str | None = None


@dataclass(frozen=True, slots=True)
class FrameMatches:
    """A frame-hash message screened against the banks: the frames that matched and
    their matches (what the stateful path needs; frames that matched nothing are gone, and
    so are the frames' dihedral variants: the matches say which transform matched)."""

    stream_id: str
    frames: tuple[Frame, ...]
    matches: tuple[Match, ...]

    @classmethod
    def of(cls, batch: FrameBatch, matches: tuple[Match, ...] | list[Match]) -> FrameMatches:
        matched = {m.frame_seq for m in matches}
        return cls(batch.stream_id, tuple(replace(f, pdq_dihedral=None) if f.pdq_dihedral else f
                                          for f in batch.frames if f.seq in matched), tuple(matches))

    def frame_hashes(self) -> dict[int, dict[str, str]]:
        """Each matched frame's hashes by signal type (for report packets)."""
        return {f.seq: {k: v for k, v in (("pdq", f.pdq), ("md5", f.md5), ("sha256", f.sha256)) if v}
                for f in self.frames}


@dataclass(frozen=True, slots=True)
class ClassifierSignal:
    stream_id: str
    classifier: str
    model_version: str
    score: float
    ts_ms: int
    frame_seq: int | None = None
    chat_message_id: str | None = None
    actor_account_id: str | None = None  # version 2: whose act was scored (e.g. the chat message's author)

    @property
    def evidence_ref(self) -> EvidenceRef | None:
        """Where the classifier looked: a frame or a chat message, if it said."""
        return EvidenceRef.of(self.frame_seq, self.chat_message_id)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ClassifierSignal:
        evidence = value.get("evidence") or {}
        return cls(
            value["stream_id"],
            value["classifier"],
            value["model_version"],
            float(value["score"]),
            value["ts_ms"],
            evidence.get("frame_seq"),
            evidence.get("chat_message_id"),
            value.get("actor_account_id"),
        )


@dataclass(frozen=True, slots=True)
class UserReport:
    stream_id: str
    category: str
    ts_ms: int
    reporter_id: str
    reported_account_id: str | None = None  # version 2: the account reported, when not the broadcaster

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> UserReport:
        return cls(value["stream_id"], value["category"], value["ts_ms"], value["reporter_id"],
                   value.get("reported_account_id"))


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    stream_id: str
    event: str
    ts_ms: int
    broadcaster_id: str
    account_age_days: int | None = None
    age_verified: bool | None = None
    viewer_count: int | None = None
    visibility: str | None = None
    language: str | None = None
    region: str | None = None

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> StreamMetadata:
        fields = {k: v for k, v in value.items() if k != "schema_version"}
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class ReviewVerdict:
    stream_id: str
    verdict: str
    reviewer_id: str
    ts_ms: int
    escalation_id: str | None = None
    category: str | None = None
    propose_hashes: bool = True

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ReviewVerdict:
        return cls(value["stream_id"], value["verdict"], value["reviewer_id"], value["ts_ms"],
                   value.get("escalation_id"), value.get("category"), value.get("propose_hashes", True))


@dataclass(frozen=True, slots=True)
class Appeal:
    """A broadcaster's appeal against a block or restriction (the appellant's id and words stay
    with the platform's appeal tool: StreamSafe needs neither to review it)."""

    stream_id: str
    appeal_id: str
    decision_id: str
    submitted_at_ms: int

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Appeal:
        return cls(value["stream_id"], value["appeal_id"], value["decision_id"], value["submitted_at_ms"])


@dataclass(frozen=True, slots=True)
class AccountFinding:
    """What an account's history says about one of its streams (``streamsafe.account-findings``): the
    account's worker found it, the stream's worker decides on it (restrict if ``restrictions``, escalate)."""

    stream_id: str
    rule: str
    ts_ms: int
    decided_at_ms: int
    reason: str
    evidence: tuple[Mapping[str, Any], ...]
    priority: str
    restrictions: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    account_escalation_id: str | None = None  # the account decision's escalation, for the stream that completed it

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> AccountFinding:
        return cls(value["stream_id"], value["rule"], value["ts_ms"], value["decided_at_ms"], value["reason"],
                   tuple(value["evidence"]), value["priority"], tuple(value.get("restrictions", ())),
                   tuple(value.get("streams", ())), value.get("account_escalation_id"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": 1, "stream_id": self.stream_id, "rule": self.rule,
                               "ts_ms": self.ts_ms, "decided_at_ms": self.decided_at_ms, "reason": self.reason,
                               "evidence": [dict(e) for e in self.evidence], "priority": self.priority}
        if self.restrictions:
            out["restrictions"] = list(self.restrictions)
        if self.streams:
            out["streams"] = list(self.streams)
        if self.account_escalation_id:
            out["account_escalation_id"] = self.account_escalation_id
        return out


@dataclass(frozen=True, slots=True)
class TimerTick:
    stream_id: str
    kind: str
    due_ms: int
    escalation_id: str | None = None

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> TimerTick:
        return cls(value["stream_id"], value["kind"], value["due_ms"], value.get("escalation_id"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": 1, "stream_id": self.stream_id, "kind": self.kind,
                               "due_ms": self.due_ms}
        if self.escalation_id:
            out["escalation_id"] = self.escalation_id
        return out
