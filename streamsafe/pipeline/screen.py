"""Screening frame-hash records: decode and validate them against the contract and match
their hashes against the banks, once.

The frame pre-filter screens whole consumer batches (the PDQ hashes of a batch in one
index call) and forwards only the records with a match, as
:class:`~streamsafe.events.models.FrameMatches`; the agent path (pre-filter off) screens
one record at a time with the same function. Either way the stateful step receives the
matches, and a frame is decoded and matched exactly once. A frame carrying its dihedral
variants has them matched in the same index call, counted per bank as the live policy's
``pdq_transforms`` / ``bank_transforms`` say (:meth:`Policy.transforms_of`).

Never raises: a record the contract rejects carries its dead letter; a record whose
screening raises carries a ``processing_error`` dead letter (the batch is then matched
one record at a time to find it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamsafe.errors import RejectedInput
from streamsafe.events.contract import FRAME_HASHES
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import FrameBatch, FrameMatches, Match
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.model import Policy

__all__ = ["FrameScreen", "RawRecord", "Screened", "processing_error"]

log = logging.getLogger(__name__)

RawRecord = tuple[bytes | None, bytes | None, SourceRecord]  # key, value, where it came from


@dataclass(frozen=True, slots=True)
class Screened:
    """One frame-hash record screened: its matches (None: nothing matched), or its dead letter."""

    matches: FrameMatches | None = None
    dead_letter: DeadLetter | None = None
    #: matches an allow bank cleared, and strong authority matches that stood against one
    allow_cleared: int = 0
    allow_overruled: int = 0

    @property
    def accepted(self) -> bool:
        return self.dead_letter is None


NOTHING = Screened()  # a record that matched nothing


def processing_error(exc: Exception, key: bytes | None, value: bytes | None, source: SourceRecord) -> DeadLetter:
    """The dead letter of a record whose handling raised (the exception type leads the detail)."""
    log.error("%s[%d]@%d raised %s; dead-lettered", source.topic, source.partition, source.offset,
              type(exc).__name__)
    log.debug("processing error", exc_info=exc)
    return DeadLetter("processing_error", f"{type(exc).__name__}: {exc}", source, key, value)


class FrameScreen:
    """Decode + validate + match for ``livestream.frame-hashes``, with the live policy's
    view of the banks (radius, quality floor, allow banks, which dihedral transforms count)."""

    def __init__(self, decoder: InputDecoder, banks: HashBanks, live_policy: Callable[[], Policy]) -> None:
        self.decoder = decoder
        self.banks = banks
        self.live_policy = live_policy

    def screen_one(self, key: bytes | None, value: bytes | None, source: SourceRecord) -> Screened:
        """:meth:`screen` of one record (the agent-only path), without the batch's bookkeeping."""
        try:
            event = self.decoder.decode(FRAME_HASHES, key, value, source.timestamp_ms, source.partition)
            assert isinstance(event, FrameBatch)
            policy = self.live_policy()
            matches = self.banks.match_frames(event.frames, policy.transforms_of)
        except RejectedInput as exc:
            return Screened(dead_letter=DeadLetter(exc.reason, exc.detail, source, key, value))
        except Exception as exc:  # one record must never stop the screening
            return Screened(dead_letter=processing_error(exc, key, value, source))
        return _screened(event, matches, policy) if matches else NOTHING

    def screen(self, records: Sequence[RawRecord]) -> list[Screened]:
        """Screen records in order; their PDQ hashes are looked up in one index call."""
        out: list[Screened | None] = [None] * len(records)
        decoded: list[tuple[int, FrameBatch]] = []
        for i, (key, value, source) in enumerate(records):
            try:
                event = self.decoder.decode(FRAME_HASHES, key, value, source.timestamp_ms, source.partition)
            except RejectedInput as exc:
                out[i] = Screened(dead_letter=DeadLetter(exc.reason, exc.detail, source, key, value))
                continue
            except Exception as exc:  # one record must never stop the screening
                out[i] = Screened(dead_letter=processing_error(exc, key, value, source))
                continue
            assert isinstance(event, FrameBatch)
            decoded.append((i, event))
        policy = self.live_policy()
        try:
            groups = self.banks.match_frame_groups([e.frames for _, e in decoded], policy.transforms_of)
        except Exception:
            groups = [self._match_one(i, e, records, out, policy) for i, e in decoded]
        for (i, event), matches in zip(decoded, groups, strict=True):
            if out[i] is None:
                out[i] = _screened(event, matches, policy)
        return [s if s is not None else Screened() for s in out]

    def _match_one(self, i: int, event: FrameBatch, records: Sequence[RawRecord],
                   out: list[Screened | None], policy: Policy) -> list[Match]:
        try:
            return self.banks.match_frames(event.frames, policy.transforms_of)
        except Exception as exc:
            key, value, source = records[i]
            out[i] = Screened(dead_letter=processing_error(exc, key, value, source))
            return []


def _screened(event: FrameBatch, matches: list[Match], policy: Policy) -> Screened:
    """A frame that matched an allow bank (overlays, test cards, black frames) is cleared of its
    matches, except strong matches in authority banks (known abuse an authority listed), which
    stand unless the policy trusts that allow bank to clear them (``allow_clears_authority``)."""
    if not matches:
        return NOTHING
    allowing: dict[int, list[str]] = {}
    for m in matches:
        if policy.trust_of(m.bank) == "allow":
            allowing.setdefault(m.frame_seq, []).append(m.bank)
    if not allowing:
        return Screened(matches=FrameMatches.of(event, matches))
    kept = [m for m in matches if m.frame_seq not in allowing
            or policy.survives_allow(m.bank, m.distance, allowing[m.frame_seq])]
    overruled = sum(1 for m in kept if m.frame_seq in allowing)
    cleared = len(matches) - len(kept) - sum(len(banks) for banks in allowing.values())
    return Screened(matches=FrameMatches.of(event, kept) if kept else None, allow_cleared=cleared,
                    allow_overruled=overruled)
