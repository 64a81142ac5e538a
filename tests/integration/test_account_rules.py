"""The policy author's account rules through a real broker and a real ``streamsafe worker``:
user reports that name an account reach the account's partition, its state counts them
(never who reported), and a rule over ``account.user_reports`` escalates the account once."""

from __future__ import annotations

import pytest
import yaml

from streamsafe.events.contract import ACCOUNT_SIGNALS, ACTIONS, ESCALATIONS, USER_REPORTS
from streamsafe.policy.loader import default_policy_text
from tests.integration.test_accounts import assert_no_account_in_logs, now_ms, stream_on
from tests.integration.waits import processed

pytestmark = pytest.mark.integration

RULE = "reported-in-two-streams"


def report(stream: str, reporter: str, account: str | None) -> dict:
    value = {"schema_version": 1, "stream_id": stream, "category": "grooming", "ts_ms": now_ms(),
             "reporter_id": reporter}
    if account is not None:
        value.update(schema_version=2, reported_account_id=account)
    return value


async def test_user_reports_naming_an_account_escalate_it_by_the_policys_account_rule(pipeline, tmp_path):
    document = yaml.safe_load(default_policy_text())
    document["accounts"]["rules"] = [{
        "name": RULE, "when": {"account.user_reports": {"gte": 3, "window": "1h"},
                               "account.reported_streams": {"gte": 2, "window": "1h"}},
        "then": [{"escalate": "P2"}, {"restrict": ["chat"]}]}]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    worker = pipeline.start_worker(STREAMSAFE_POLICY_FILE=str(path), STREAMSAFE_LOG_LEVEL="info")
    worker.wait_ready()
    streams = [stream_on(p, f"rep{p}") for p in range(3)]
    # reported three times in two streams: the rule holds; look-alikes: reported three times in one
    # stream, and reports that name no account (about the broadcaster)
    sent = [(streams[0], "acct-reported"), (streams[1], "acct-reported"), (streams[1], "acct-reported"),
            (streams[2], "acct-one-stream"), (streams[2], "acct-one-stream"), (streams[2], "acct-one-stream"),
            (streams[0], None), (streams[0], None), (streams[1], None)]
    for i, (stream, account) in enumerate(sent):
        await pipeline.send(USER_REPORTS, stream.encode(), report(stream, f"acct-reporter-{i}", account))

    def ruled(records) -> list[dict]:
        return [d for topic in (ACTIONS, ESCALATIONS) for d in records.on(topic) if d.get("rule") == RULE]

    records = await pipeline.read(until=lambda r: len({d["decision_id"] for d in ruled(r)}) >= 2, timeout_s=90,
                                  settle_s=3.0)
    decided = {d["decision_id"]: d for d in ruled(records)}.values()
    assert sorted(d["action"] for d in decided) == ["escalate", "restrict"]
    assert {d["subject"]["id"] for d in decided} == {"acct-reported"}
    escalation = next(d for d in decided if d["action"] == "escalate")
    assert escalation["schema_version"] == 2 and escalation["priority"] == "P2"
    assert sorted(escalation["streams"]) == sorted(streams[:2])
    assert "account.user_reports 3 gte 3 within 1h" in escalation["reasons"][0]
    assert all(e["kind"] == "account" and "reporter_id" not in e for e in escalation["evidence"])
    await processed(pipeline, ACCOUNT_SIGNALS)
    assert worker.alive
    assert_no_account_in_logs([worker], {"acct-reported", "acct-one-stream"})
