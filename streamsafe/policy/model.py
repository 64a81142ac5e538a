"""A policy: a version, review SLAs, the fusion model, and ordered rules that turn
a stream's evidence into actions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streamsafe.events.values import Priority
from streamsafe.matching.dihedral import ALL, ONLY_IDENTITY
from streamsafe.matching.signal_types import PDQ
from streamsafe.scoring.fusion import FusionModel

__all__ = ["ACTION_KINDS", "PRIORITIES", "REINSTATE", "RESTRICTIONS", "TRUST_LEVELS", "AccountPolicy", "Action",
           "Ground", "Policy", "Predicate", "RepeatBroadcaster", "Rule", "StatementTexts", "ViewerGrooming"]

ACTION_KINDS = ("monitor", "escalate", "restrict", "block", "report")  # what rules may do
REINSTATE = "reinstate"  # what only a reviewer's reversal of an appealed decision does
PRIORITIES = tuple(p.value for p in Priority)
RESTRICTIONS = ("chat", "gifting", "discovery", "new_viewers")
TRUST_LEVELS = ("authority", "internal", "partner", "allow")


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    priority: str | None = None
    restrictions: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "escalate":
            return f"escalate {self.priority}"
        if self.kind == "restrict":
            return f"restrict {', '.join(self.restrictions)}"
        return self.kind


@dataclass(frozen=True, slots=True)
class Predicate:
    """``feature op value``; ``trust`` and ``window_s`` narrow the features that take them."""

    feature: str
    op: str
    value: float | bool
    trust: tuple[str, ...] = ()
    window_s: float | None = None

    def describe(self) -> str:
        return f"{self.feature} {self.op} {self.value}"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    predicates: tuple[Predicate, ...]
    actions: tuple[Action, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Ground:
    """What a statement of reasons cites: a legal ground (illegal content) or a clause of the
    terms of service (incompatible content), with an explanation. The policy's text, never code's."""

    ground: str
    explanation: str
    illegal: str = "Yes"  # for terms grounds: is the content also illegal ("Yes"/"No")


@dataclass(frozen=True, slots=True)
class StatementTexts:
    """The policy's ``statements`` section: grounds by kind of harm (``csam``, ``grooming``: illegal
    content), ``terms`` (incompatible content), ``reinstatement``, and the kind of harm of each rule."""

    legal_grounds: Mapping[str, Ground] = field(default_factory=dict)
    terms: Ground | None = None
    reinstatement: Ground | None = None
    harm_of_rules: Mapping[str, str] = field(default_factory=dict)

    def harm_of(self, rule: str | None, category: str | None = None) -> str:
        """The kind of harm a decision is about: a reviewer's category says it, else the rule's entry
        (default ``csam``)."""
        if category == "grooming":
            return "grooming"
        if category in ("A1", "A2", "B1", "B2"):
            return "csam"
        return self.harm_of_rules.get(rule or "", "csam")


@dataclass(frozen=True, slots=True)
class VerdictEffects:
    """What a reviewer's confirmed verdict may set off (the ``verdicts`` section): the incident's
    authority report, and adding the matched frames' hashes to internal-confirmed, only for frames
    matched in banks of the trust levels named (a verdict always blocks)."""

    report: bool = True
    bank_from: frozenset[str] = frozenset({"authority", "internal", "partner"})


@dataclass(frozen=True, slots=True)
class RepeatBroadcaster:
    """A stream started by a broadcaster blocked within ``window_s`` is restricted and escalated at
    ``stream.started``, at the priority of the prior block's rule (``default`` for other rules)."""

    window_s: float = 30 * 86400.0
    priority_by_rule: Mapping[str, str] = field(default_factory=lambda: {"default": "P1"})
    restrictions: tuple[str, ...] = ("chat", "gifting", "discovery", "new_viewers")

    def priority_after(self, rule: str) -> str:
        return self.priority_by_rule.get(rule) or self.priority_by_rule.get("default") or "P1"


@dataclass(frozen=True, slots=True)
class ViewerGrooming:
    """A viewer whose grooming signals (``classifiers`` at ``min_score`` or more) reached the streams of at
    least ``min_streams`` broadcasters not verified as adults within ``window_s`` is escalated (and,
    if ``restrictions``, restricted) as an account."""

    classifiers: frozenset[str] = frozenset({"grooming_text"})
    min_score: float = 0.8
    min_streams: int = 3
    window_s: float = 86400.0
    priority: str = "P1"
    restrictions: tuple[str, ...] = ("chat",)


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    """The ``accounts`` section: risk that follows an account across its streams; ``retention_s``:
    how long anything about an account is kept; ``rules``: the policy author's own rules over account
    features (``account.prior_blocks``, ``viewer.young_targets``, ...), evaluated on the account's worker."""

    retention_s: float = 30 * 86400.0
    repeat_broadcaster: RepeatBroadcaster | None = field(default_factory=RepeatBroadcaster)
    viewer_grooming: ViewerGrooming | None = field(default_factory=ViewerGrooming)
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    rules: tuple[Rule, ...]
    fusion: FusionModel = field(default_factory=FusionModel)
    review_sla_s: Mapping[str, float] = field(default_factory=dict)
    strong_max_distance: int = 10
    weak_window_s: float = 600.0
    bank_trust: Mapping[str, str] = field(default_factory=dict)
    pdq_radius: int = PDQ.threshold
    pdq_min_quality: int = PDQ.min_quality
    bank_radius: Mapping[str, int] = field(default_factory=dict)
    #: by bank trust: under which dihedral transforms a frame showing a bank's picture
    #: matches, when the frame carries its variants (trust levels not named: identity only)
    pdq_transforms: Mapping[str, frozenset[str]] = field(default_factory=lambda: {"authority": ALL})
    bank_transforms: Mapping[str, frozenset[str]] = field(default_factory=dict)  # per bank, over trust
    #: allow banks whose match may also clear a frame's strong authority match (default none: an
    #: allow entry clears weak and partner matches, never known abuse an authority listed)
    allow_clears_authority: frozenset[str] = frozenset()
    statements: StatementTexts = field(default_factory=StatementTexts)
    appeal_priority: str = "P2"  # the priority of an appeal's review item
    verdict_effects: VerdictEffects = field(default_factory=VerdictEffects)
    accounts: AccountPolicy = field(default_factory=AccountPolicy)

    def trust_of(self, bank: str) -> str:
        return self.bank_trust.get(bank, "partner")

    def transforms_of(self, bank: str) -> frozenset[str]:
        """The dihedral transforms (:mod:`streamsafe.matching.dihedral`) under which a
        frame showing one of ``bank``'s pictures counts as a match."""
        chosen = self.bank_transforms.get(bank)
        return chosen if chosen is not None else self.pdq_transforms.get(self.trust_of(bank), ONLY_IDENTITY)

    def is_strong(self, distance: int) -> bool:
        return distance <= self.strong_max_distance

    def survives_allow(self, match_bank: str, distance: int, allow_banks: Iterable[str]) -> bool:
        """Whether a match stands on a frame that also matched ``allow_banks``: a strong match in an
        authority bank does, unless one of those allow banks is trusted to clear it."""
        return (self.trust_of(match_bank) == "authority" and self.is_strong(distance)
                and not any(bank in self.allow_clears_authority for bank in allow_banks))
