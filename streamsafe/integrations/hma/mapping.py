"""The mapping file: which HMA banks StreamSafe mirrors, into which StreamSafe bank, at which trust.

```yaml
banks:
  NCMEC_CSAM:                 # the HMA bank (UPPER_WITH_UNDERSCORE)
    bank: ncmec               # the StreamSafe bank its hashes go to
    trust: authority          # authority | internal | partner | allow
```

Trust is the policy's to give (``banks:`` in the policy): the mapping states what the
platform means, and :func:`policy_disagreements` refuses a sync whose policy would treat a
bank otherwise, so the two cannot drift apart silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streamsafe.errors import BankError, ConfigError
from streamsafe.events.bank_entries import check_bank_name
from streamsafe.policy.model import TRUST_LEVELS, Policy

__all__ = ["HMA_SIGNAL_TYPES", "BankMapping", "MappedBank", "default_mapping", "load_mapping",
           "parse_mapping", "policy_disagreements"]

_HMA_BANK = re.compile(r"[A-Z_][A-Z0-9_]*")
#: HMA signal type -> StreamSafe signal type (HMA's video_md5 is the MD5 of the whole file)
HMA_SIGNAL_TYPES: Mapping[str, str] = {"pdq": "pdq", "video_md5": "md5"}


@dataclass(frozen=True, slots=True)
class MappedBank:
    hma_bank: str
    bank: str
    trust: str | None  # None: whatever the policy says (no mapping file)


@dataclass(frozen=True, slots=True)
class BankMapping:
    banks: tuple[MappedBank, ...]

    def of(self, hma_bank: str) -> MappedBank | None:
        for mapped in self.banks:
            if mapped.hma_bank == hma_bank:
                return mapped
        return None

    @property
    def hma_banks(self) -> list[str]:
        return [m.hma_bank for m in self.banks]

    def as_dict(self) -> dict[str, str]:
        return {m.hma_bank: m.bank for m in self.banks}

    def only(self, hma_banks: Iterable[str]) -> BankMapping:
        wanted = list(hma_banks)
        missing = [b for b in wanted if self.of(b) is None]
        if missing:
            raise ConfigError(f"--banks names HMA banks the mapping file does not map: {', '.join(missing)}")
        return BankMapping(tuple(m for m in self.banks if m.hma_bank in wanted))


def _problem(where: str, message: str) -> ConfigError:
    return ConfigError(f"HMA bank mapping: {where}: {message}")


def parse_mapping(doc: Any) -> BankMapping:
    """A mapping from a parsed YAML document; every problem is a ConfigError naming its place."""
    if not isinstance(doc, dict) or set(doc) != {"banks"}:
        raise _problem("top level", "must be a mapping with exactly one key, banks")
    banks = doc["banks"]
    if not isinstance(banks, dict) or not banks:
        raise _problem("banks", "must map at least one HMA bank name to {bank, trust}")
    mapped = []
    for hma_bank, spec in banks.items():
        where = f"banks.{hma_bank}"
        if not isinstance(hma_bank, str) or not _HMA_BANK.fullmatch(hma_bank):
            raise _problem(where, "HMA bank names are UPPER_WITH_UNDERSCORE")
        if not isinstance(spec, dict) or set(spec) - {"bank", "trust"} or "bank" not in spec or "trust" not in spec:
            raise _problem(where, "must be {bank: <StreamSafe bank>, trust: <trust level>} and nothing else")
        try:
            check_bank_name(str(spec["bank"]))
        except BankError as exc:
            raise _problem(f"{where}.bank", str(exc)) from None
        if spec["trust"] not in TRUST_LEVELS:
            raise _problem(f"{where}.trust", f"{spec['trust']!r} is not one of {', '.join(TRUST_LEVELS)}")
        mapped.append(MappedBank(hma_bank, str(spec["bank"]), str(spec["trust"])))
    return BankMapping(tuple(mapped))


def load_mapping(path: Path) -> BankMapping:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the HMA bank mapping {path}: {exc}") from None
    return parse_mapping(doc)


def default_mapping(hma_banks: Iterable[str]) -> BankMapping:
    """Without a mapping file: each HMA bank into the StreamSafe bank of its lower-cased name,
    at the trust the policy gives that name."""
    mapped = []
    for hma_bank in hma_banks:
        if not _HMA_BANK.fullmatch(hma_bank):
            raise ConfigError(f"{hma_bank!r} is not an HMA bank name (they are UPPER_WITH_UNDERSCORE)")
        mapped.append(MappedBank(hma_bank, hma_bank.lower(), None))
    return BankMapping(tuple(mapped))


def policy_disagreements(mapping: BankMapping, policy: Policy) -> list[str]:
    """Where the policy would give a mapped bank another trust than the mapping states."""
    return [f"HMA bank {m.hma_bank} is mapped to {m.bank} at trust {m.trust}, but policy {policy.version} "
            f"gives {m.bank} trust {policy.trust_of(m.bank)}: add '{m.bank}: {m.trust}' under banks: in the "
            "policy, or change the mapping"
            for m in mapping.banks if m.trust is not None and policy.trust_of(m.bank) != m.trust]
