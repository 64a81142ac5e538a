"""Evidence: one observation about a stream that a policy may act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamsafe.events.models import ClassifierSignal
from streamsafe.matching.banks import Match

__all__ = ["Evidence", "classifier_evidence", "match_evidence"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """``kind`` is ``hash_match``, ``classifier`` or ``user_report``; ``detail`` holds
    only references (bank, entry id, frame seq, message id), never hash values."""

    kind: str
    ts_ms: int
    detail: tuple[tuple[str, Any], ...]

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "ts_ms": self.ts_ms, **dict(self.detail)}


def match_evidence(match: Match) -> Evidence:
    detail: list[tuple[str, Any]] = [
        ("signal_type", match.signal_type),
        ("bank", match.bank),
        ("entry_id", match.entry_id),
        ("distance", match.distance),
        ("frame_seq", match.frame_seq),
    ]
    return Evidence("hash_match", match.frame_ts_ms, tuple(detail))


def classifier_evidence(signal: ClassifierSignal, threshold: float) -> Evidence:
    detail: list[tuple[str, Any]] = [
        ("classifier", signal.classifier),
        ("model_version", signal.model_version),
        ("score", signal.score),
        ("threshold", threshold),
    ]
    if signal.frame_seq is not None:
        detail.append(("frame_seq", signal.frame_seq))
    if signal.chat_message_id is not None:
        detail.append(("chat_message_id", signal.chat_message_id))
    return Evidence("classifier", signal.ts_ms, tuple(detail))
