"""DSA statements of reasons: each block, restriction and reinstatement of a stream as a
submission to the DSA Transparency Database (Regulation (EU) 2022/2065, Art. 17 and 24(5)).

Pure: ``(decision, policy, context) -> Statement``. The fields and their rules are the
database's (``topics/enforcement.statements.json`` encodes them as a JSON Schema):

* what was done -- ``decision_visibility`` (a block disables the stream; chat and new-viewer
  restrictions restrict interaction; a discovery restriction demotes it; a reinstatement is
  ``DECISION_VISIBILITY_OTHER``, said in ``decision_visibility_other``) and ``decision_monetary``
  (a gifting restriction suspends payments);
* why -- ``decision_ground``: illegal content for the policy's kinds of harm (``csam``,
  ``grooming``), citing the policy's ``statements.legal_grounds`` text; incompatible content (the
  terms of service) for rules the policy maps to ``terms`` and for reinstatements. The texts are
  the policy's, never this module's;
* how -- ``source_type`` (``SOURCE_ARTICLE_16`` when user reports were evidence, else
  ``SOURCE_VOLUNTARY``), ``automated_detection`` (hash, classifier or risk evidence) and
  ``automated_decision`` (fully automated unless a reviewer's verdict is in the evidence);
* ``puid``, the platform's id of the statement: the stream id (characters outside
  ``[A-Za-z0-9-_]`` replaced) and the decision's digest, unique per statement.

A statement carries no hash values, bank entry ids, reviewer or account ids: only the stream
id (within ``puid``) and the decision id, which the platform's own records resolve.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamsafe.events.encode import encode_record
from streamsafe.policy.decisions import Decision
from streamsafe.policy.model import Ground, Policy

__all__ = ["STATEMENT_ACTIONS", "Statement", "StatementContext", "build_statement", "puid_of", "statement_id_of"]

#: the decisions that get a statement: they affect what viewers and the broadcaster can do
STATEMENT_ACTIONS = frozenset({"block", "restrict", "reinstate"})
SCHEMA_VERSION = 1
MAX_FACTS = 5000
MAX_PUID = 500
_KEYWORDS = {"csam": "KEYWORD_CHILD_SEXUAL_ABUSE_MATERIAL", "grooming": "KEYWORD_GROOMING_SEXUAL_ENTICEMENT_MINORS"}
_INTERACTION = {"chat", "new_viewers"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_LISTS = {"authority": "a hash list held by a child-protection authority", "internal": "the platform's own hash list "
          "of confirmed material", "partner": "a partner's hash list"}


@dataclass(frozen=True, slots=True)
class StatementContext:
    """What the stream's state knows beyond the decision."""

    content_ms: int | None = None  # when the stream started (else: its earliest evidence)
    reversed_action: str | None = None  # for a reinstatement: what it lifts (block, restrict)
    reversed_harm: str | None = None  # for a reinstatement: the kind of harm of the reversed decision


@dataclass(frozen=True, slots=True)
class Statement:
    statement_id: str
    stream_id: str
    record: Mapping[str, Any]  # the ``enforcement.statements`` record; ``record["statement"]`` the submission

    def encode(self) -> bytes:
        return encode_record(self.record)


def statement_id_of(decision_id: str) -> str:
    """One statement per decision: its id is a digest of the decision's."""
    return "sor-" + hashlib.sha256(f"statement:{decision_id}".encode()).hexdigest()[:32]


def puid_of(stream_id: str, decision_id: str) -> str:
    """The platform's unique id of a statement, within the database's ``[A-Za-z0-9-_]``, at most 500."""
    safe = _UNSAFE.sub("_", stream_id)
    if safe != stream_id:  # two stream ids that differ only in replaced characters stay apart
        safe += "_" + hashlib.sha256(stream_id.encode()).hexdigest()[:8]
    return f"{safe[:MAX_PUID - 30]}-{decision_id.removeprefix('dec-')[:24]}"


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _evidence(decision: Decision) -> list[dict[str, Any]]:
    return [e.as_record() for e in decision.evidence]


def _review(evidence: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((e for e in evidence if e["kind"] == "review" and e.get("verdict")), None)


def _harm(decision: Decision, policy: Policy, evidence: Sequence[Mapping[str, Any]],
          context: StatementContext) -> str:
    if decision.action == "reinstate":
        return "reinstatement"
    review = _review(evidence)
    return policy.statements.harm_of(decision.rule, review.get("category") if review else None)


def _what(decision: Decision, context: StatementContext) -> dict[str, Any]:
    if decision.action == "block":
        return {"decision_visibility": ["DECISION_VISIBILITY_CONTENT_DISABLED"]}
    if decision.action == "reinstate":
        lifted = context.reversed_action or "restriction"
        return {"decision_visibility": ["DECISION_VISIBILITY_OTHER"],
                "decision_visibility_other": f"Reinstatement: the earlier {lifted} of the live stream was lifted "
                                             "after a reviewer reversed it on the broadcaster's complaint."}
    restricted = set(decision.restrictions)
    fields: dict[str, Any] = {}
    visibility = []
    if restricted & _INTERACTION:
        visibility.append("DECISION_VISIBILITY_CONTENT_INTERACTION_RESTRICTED")
    if "discovery" in restricted:
        visibility.append("DECISION_VISIBILITY_CONTENT_DEMOTED")
    if visibility:
        fields["decision_visibility"] = visibility
    if "gifting" in restricted:
        fields["decision_monetary"] = "DECISION_MONETARY_SUSPENSION"
    if not fields:  # a restriction this version does not name: say so rather than guess
        fields["decision_visibility"] = ["DECISION_VISIBILITY_OTHER"]
        fields["decision_visibility_other"] = f"Restriction of the live stream: {', '.join(sorted(restricted))}"
    return fields


def _why(harm: str, policy: Policy) -> dict[str, Any]:
    texts = policy.statements
    legal = texts.legal_grounds.get(harm)
    if legal is not None:
        return {"decision_ground": "DECISION_GROUND_ILLEGAL_CONTENT", "illegal_content_legal_ground": legal.ground,
                "illegal_content_explanation": legal.explanation}
    terms: Ground | None = texts.reinstatement if harm == "reinstatement" else texts.terms
    if terms is None:
        raise ValueError(f"policy {policy.version} states no ground for {harm!r} decisions")
    return {"decision_ground": "DECISION_GROUND_INCOMPATIBLE_CONTENT", "incompatible_content_ground": terms.ground,
            "incompatible_content_explanation": terms.explanation, "incompatible_content_illegal": terms.illegal}


def _facts(decision: Decision, policy: Policy, evidence: Sequence[Mapping[str, Any]],
           context: StatementContext) -> str:
    """What happened, in words, from the decision's references: never hashes, entry or person ids."""
    if decision.action == "reinstate":
        lines = [f"A reviewer reversed the {context.reversed_action or 'earlier'} decision "
                 f"{decision.reverses or ''} on the broadcaster's complaint and lifted it."]
    else:
        done = ("StreamSafe disabled access to the live stream" if decision.action == "block"
                else f"StreamSafe restricted the live stream ({', '.join(decision.restrictions)})")
        rule = next((r for r in policy.rules if r.name == decision.rule), None)
        why = f": {rule.description}" if rule is not None and rule.description else ""
        lines = [f"{done} under policy {decision.policy_version}, rule '{decision.rule}'{why}."]
    # by the list's trust, not its name: a statement goes to the broadcaster and is published, and
    # which authority's list matched is for the authority's report, not for them
    trusts = Counter(policy.trust_of(str(e.get("bank"))) for e in evidence if e["kind"] == "hash_match")
    for trust, frames in sorted(trusts.items()):
        lines.append(f"{frames} frame(s) matched known child sexual abuse material on {_LISTS.get(trust, 'a list')}.")
    for e in evidence:
        if e["kind"] == "classifier":
            lines.append(f"Classifier '{e.get('classifier')}' scored {e.get('score')}.")
        elif e["kind"] == "user_report":
            lines.append(f"Viewers reported the stream ({e.get('count', 1)} report(s)).")
        elif e["kind"] == "risk" and "log_odds" in e:
            lines.append("The fused risk of the stream's signals passed the policy's threshold.")
    review = _review(evidence)
    if review is not None and decision.action != "reinstate":
        category = f" (category {review['category']})" if review.get("category") else ""
        lines.append(f"A reviewer {review['verdict']} it{category}.")
    facts = " ".join(lines)
    return facts if len(facts) <= MAX_FACTS else facts[:MAX_FACTS - 1] + "…"


def build_statement(decision: Decision, policy: Policy, context: StatementContext | None = None) -> Statement:
    """The statement of reasons for a block, restrict or reinstate decision."""
    if decision.action not in STATEMENT_ACTIONS or decision.shadow:
        raise ValueError(f"no statement of reasons for a {'shadow ' if decision.shadow else ''}"
                         f"{decision.action} decision")
    context = context or StatementContext()
    evidence = _evidence(decision)
    harm = _harm(decision, policy, evidence, context)
    # automated detection: hash, classifier or risk evidence, or a review of an item StreamSafe raised
    detected = any(e["kind"] in ("hash_match", "classifier", "risk")
                   or (e["kind"] == "review" and e.get("escalation_id")) for e in evidence)
    reviewed = _review(evidence) is not None or decision.action == "reinstate"
    times = [e["ts_ms"] for e in evidence if e["kind"] not in ("review", "context")]
    content_ms = context.content_ms or min(times, default=decision.event_ts_ms)
    statement: dict[str, Any] = {
        **_what(decision, context),
        **_why(harm, policy),
        "content_type": ["CONTENT_TYPE_VIDEO", *(["CONTENT_TYPE_TEXT"] if any(
            e.get("chat_message_id") for e in evidence) else [])],
        "category": "STATEMENT_CATEGORY_PROTECTION_OF_MINORS",
        "content_date": _date(min(content_ms, decision.decided_at_ms)),
        "application_date": _date(decision.decided_at_ms),
        "decision_facts": _facts(decision, policy, evidence, context),
        "source_type": "SOURCE_ARTICLE_16" if any(e["kind"] == "user_report" for e in evidence)
        else "SOURCE_VOLUNTARY",
        "automated_detection": "Yes" if detected and decision.action != "reinstate" else "No",
        "automated_decision": ("AUTOMATED_DECISION_FULLY" if not reviewed
                               else "AUTOMATED_DECISION_PARTIALLY" if detected and decision.action != "reinstate"
                               else "AUTOMATED_DECISION_NOT_AUTOMATED"),
        "puid": puid_of(decision.stream_id, decision.decision_id),
    }
    keyword = _KEYWORDS.get(harm if harm != "reinstatement" else context.reversed_harm or "")
    if keyword:
        statement["category_specification"] = [keyword]
    statement_id = statement_id_of(decision.decision_id)
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "statement_id": statement_id, "decision_id": decision.decision_id,
        "stream_id": decision.stream_id, "action": decision.action, "policy_version": decision.policy_version,
        "decided_at_ms": decision.decided_at_ms, "statement": statement,
    }
    if decision.reverses:
        record["reverses"] = decision.reverses
    if decision.appeal_id:
        record["appeal_id"] = decision.appeal_id
    return Statement(statement_id, decision.stream_id, record)
