"""``streamsafe policy rollback``: publish again an earlier policy, as the audit trail holds it.

The policy topic is compacted (an earlier policy under the same key is gone from it); the
audit trail keeps every applied policy document. The rollback signs it with the operator's
key (a signature says who published it now) and the workers switch to it as to any policy.
"""

from __future__ import annotations

from typing import Any

from streamsafe.control.audit import read_audit
from streamsafe.control.publish import publish_policy_document
from streamsafe.control.records import LIVE_KEY, SHADOW_PREFIX
from streamsafe.errors import PolicyError
from streamsafe.events.contract import POLICY
from streamsafe.settings import Settings

__all__ = ["applied_policies", "rollback"]


def applied_policies(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The applied policy records under ``key``, in order (oldest first)."""
    return [r for r in records if r.get("topic") == POLICY and r.get("key") == key
            and r.get("change") == "policy_published" and r.get("outcome") == "applied" and r.get("policy")]


def choose(history: list[dict[str, Any]], version: str | None) -> tuple[str, dict[str, Any]]:
    """The version in force and the audit record to go back to."""
    if not history:
        raise PolicyError(["the audit trail holds no applied policy under this key"])
    current = str(history[-1].get("new_version"))
    earlier = [r for r in history[:-1] if r.get("new_version") != current]
    if version is not None:
        earlier = [r for r in earlier if r.get("new_version") == version]
        if not earlier:
            known = sorted({str(r.get("new_version")) for r in history})
            raise PolicyError([f"no earlier applied policy {version!r} in the audit trail (known: {', '.join(known)})"])
    if not earlier:
        raise PolicyError([f"no earlier policy than {current} in the audit trail"])
    return current, earlier[-1]


async def rollback(settings: Settings, version: str | None = None, shadow: str | None = None) -> tuple[str, str]:
    """Publish the policy before the one in force (or ``version``); returns (was, now)."""
    key = LIVE_KEY if shadow is None else SHADOW_PREFIX + shadow
    current, target = choose(applied_policies(await read_audit(settings), key), version)
    await publish_policy_document(settings, target["policy"], shadow)
    return current, str(target.get("new_version"))
