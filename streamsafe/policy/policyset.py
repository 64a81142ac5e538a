"""The policies a worker runs: one live policy that enforces, and shadow policies
whose would-be decisions go only to the shadow topic."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from streamsafe.policy.model import Policy

__all__ = ["PolicySet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicySet:
    live: Policy
    shadows: Mapping[str, Policy] = field(default_factory=dict)

    def with_live(self, policy: Policy) -> PolicySet:
        log.info("live policy is now %s (was %s)", policy.version, self.live.version)
        return replace(self, live=policy)

    def with_shadow(self, name: str, policy: Policy | None) -> PolicySet:
        shadows = dict(self.shadows)
        if policy is None:
            shadows.pop(name, None)
            log.info("shadow policy %s removed", name)
        else:
            shadows[name] = policy
            log.info("shadow policy %s is now %s", name, policy.version)
        return replace(self, shadows=shadows)
