"""Every exception StreamSafe raises on purpose derives from one root.

    StreamSafeError
    ├── ConfigError            settings or a contract file are invalid
    │   ├── ContractError      a topics/ file is missing, malformed or inconsistent
    │   └── PolicyError        a policy file is invalid (the running policy stays in force)
    ├── BankError              a hash list cannot be loaded
    ├── BrokerError            a broker cannot be fetched, started or reached
    │   └── TopicMismatchError an existing topic disagrees with the contract
    └── RejectedInput          one input message breaks the contract (goes to dead-letter)

``RejectedInput`` never escapes an agent: it is turned into a dead-letter
record with its ``reason``.
"""

from __future__ import annotations

__all__ = [
    "BankError",
    "BrokerError",
    "ConfigError",
    "ContractError",
    "PolicyError",
    "RejectedInput",
    "StreamSafeError",
    "TopicMismatchError",
]


class StreamSafeError(Exception):
    """Root of all StreamSafe errors."""


class ConfigError(StreamSafeError):
    """Settings are invalid."""


class ContractError(ConfigError):
    """A topic definition in topics/ is missing, malformed or inconsistent."""


class PolicyError(ConfigError):
    """A policy is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid policy: " + "; ".join(problems))
        self.problems = problems


class BankError(StreamSafeError):
    """A hash list could not be loaded."""


class BrokerError(StreamSafeError):
    """A broker could not be fetched, started or reached."""


class TopicMismatchError(BrokerError):
    """A topic exists on the broker with a partition count other than the contract's."""


class RejectedInput(StreamSafeError):
    """An input message breaks the event contract.

    ``reason`` is one of the dead-letter reasons documented in
    ``topics/streamsafe.dead-letter.json``; ``detail`` says what exactly.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
