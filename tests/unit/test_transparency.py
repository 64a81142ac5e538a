"""The transparency report's computation and renderings, on hand-built records."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser

import jsonschema
import orjson
import pytest
from click.testing import CliRunner

from streamsafe.cli import cli
from streamsafe.cli.transparency import parse_time
from streamsafe.policy.loader import load_policy
from streamsafe.transparency import EnforcementLog, compute_report
from streamsafe.transparency.compute import nearest_rank
from streamsafe.transparency.render import figure_text, flatten, to_csv, to_html
from tests.transparency_support import (
    MIN,
    T0,
    appeal,
    assert_report_matches,
    classifier_ev,
    dead_letter,
    decision,
    expected_figures,
    hash_ev,
    parse_figure,
    preservation,
    reinstate,
    report,
    review_ev,
    risk_ev,
    user_report_ev,
    verdict,
)

TRUST = load_policy().bank_trust
SINCE, UNTIL = T0, T0 + 24 * 60 * MIN


def figures(records, since=SINCE, until=UNTIL):
    return compute_report(EnforcementLog.of(records), since, until, TRUST).as_record()


def mixed_records():
    """A day with every kind of record: hashes, classifiers, reviews, appeals, dead letters."""
    hashed = decision("st-hash", "block", T0 + MIN, [hash_ev(T0 + MIN - 500)], rule="authority-hash-strong")
    hashed_esc = decision("st-hash", "escalate", T0 + MIN, [hash_ev(T0 + MIN - 500)], rule="authority-hash-strong",
                          priority="P1", due=T0 + 31 * MIN)
    internal = decision("st-int", "block", T0 + 2 * MIN, [hash_ev(T0 + 2 * MIN, "internal-confirmed")],
                        rule="authority-hash-strong")
    partner = decision("st-partner", "restrict", T0 + 2 * MIN, [hash_ev(T0 + 2 * MIN - 9, "partner-x")],
                       rule="weak-hash-repeated", restrictions=["chat"])
    csam_esc = decision("st-csam", "escalate", T0 + 3 * MIN, [classifier_ev(T0 + 2 * MIN)], rule="csam-classifier",
                        priority="P0", due=T0 + 8 * MIN)
    csam_block = decision("st-csam", "block", T0 + 6 * MIN, [review_ev(T0 + 6 * MIN, "B1")], rule="reviewer-confirmed")
    benign_esc = decision("st-benign", "escalate", T0 + 4 * MIN, [classifier_ev(T0 + 4 * MIN)],
                          rule="csam-classifier", priority="P0", due=T0 + 9 * MIN)
    late_esc = decision("st-late", "escalate", T0 + 5 * MIN, [user_report_ev(T0 + 5 * MIN)], rule="user-reports-burst",
                        priority="P2", due=T0 + 125 * MIN)
    risk_esc = decision("st-risk", "escalate", T0 + 6 * MIN, [risk_ev(T0 + 6 * MIN)], rule="fused-risk-elevated",
                        priority="P3", due=T0 + 6 * MIN + 24 * 60 * MIN)
    breach = decision("st-late", "escalate", T0 + 125 * MIN,
                      [{"kind": "review", "ts_ms": T0 + 125 * MIN, "escalation_id": late_esc["decision_id"],
                        "missed_priority": "P2"}], rule="review-sla-breach", priority="P1", due=T0 + 155 * MIN)
    rep_policy = report("st-hash", T0 + MIN)
    rep_review = report("st-csam", T0 + 6 * MIN, trigger="reviewer", category="B1")
    undo = reinstate("st-partner", T0 + 300 * MIN, "apl-1", partner["decision_id"])
    return [
        ("enforcement.actions", hashed), ("enforcement.escalations", hashed_esc), ("enforcement.actions", internal),
        ("enforcement.actions", partner), ("enforcement.escalations", csam_esc), ("enforcement.actions", csam_block),
        ("enforcement.escalations", benign_esc), ("enforcement.escalations", late_esc),
        ("enforcement.escalations", risk_esc), ("enforcement.escalations", breach),
        ("enforcement.reports", rep_policy), ("enforcement.preservation", preservation(rep_policy)),
        ("enforcement.reports", rep_review), ("enforcement.preservation", preservation(rep_review)),
        ("review.verdicts", verdict("st-csam", "needs_more_context", T0 + 4 * MIN, csam_esc["decision_id"])),
        ("review.verdicts", verdict("st-csam", "confirmed", T0 + 6 * MIN, csam_esc["decision_id"], "B1")),
        ("review.verdicts", verdict("st-benign", "benign", T0 + 10 * MIN, benign_esc["decision_id"])),
        ("review.verdicts", verdict("st-late", "benign", T0 + 130 * MIN)),
        ("review.appeals", appeal("apl-1", "st-partner", partner["decision_id"], T0 + 200 * MIN)),
        ("review.appeals", appeal("apl-2", "st-hash", hashed["decision_id"], T0 + 210 * MIN)),
        ("enforcement.actions", undo),
        ("streamsafe.dead-letter", dead_letter("malformed_json", T0 + MIN, 1)),
        ("streamsafe.dead-letter", dead_letter("oversized", T0 + MIN, 2)),
        ("streamsafe.dead-letter", dead_letter("oversized", T0 + 2 * MIN, 3)),
    ]


def test_builders_follow_the_contract(contract):
    for topic, value in mixed_records():
        if topic in contract and value.get("action") != "reinstate":
            jsonschema.validate(value, contract[topic].schema)


def test_an_empty_period_has_zero_counts_and_no_rates():
    r = figures([])
    assert r["actions"]["total"] == 0 and set(r["actions"]["by_type"].values()) == {0}
    assert set(r["detection_sources"].values()) == {0}
    assert r["automation"] == {"automated": 0, "human": 0}
    assert r["time_to_action_ms"]["all"] == {"count": 0, "median": None, "p95": None}
    assert r["authority_reports"] == {"filed": 0, "by_trigger": {}, "by_incident_type": {}, "preservation_requests": 0}
    assert all(s == {"escalations": 0, "met": 0, "missed": 0, "open": 0, "met_rate": None}
               for s in r["review_sla"].values())
    assert r["reviewer_overturn"] == {}
    assert r["appeals"] == {"received": 0, "reversals": 0, "reversal_rate": None}
    assert r["dead_letters"] == {"total": 0, "by_reason": {}}


def test_records_outside_the_period_are_not_counted():
    # every record of the mixed day lies before T0 + 24 h: a period after it is empty
    later = figures(mixed_records(), UNTIL, UNTIL + 60 * MIN)
    assert later["actions"]["total"] == 0 and later["authority_reports"]["filed"] == 0
    assert later["dead_letters"]["total"] == 0 and later["appeals"]["received"] == 0
    assert later["records"]["read"]["enforcement.actions"] == 5  # read, just not in the period


def test_since_is_included_and_until_is_not():
    at = decision("st-1", "block", T0 + MIN, [hash_ev(T0 + MIN)])
    assert figures([("enforcement.actions", at)], T0 + MIN, T0 + 2 * MIN)["actions"]["total"] == 1
    assert figures([("enforcement.actions", at)], T0, T0 + MIN)["actions"]["total"] == 0


def test_the_mixed_day_matches_the_independent_count():
    records = mixed_records()
    assert_report_matches(figures(records), expected_figures(records, SINCE, UNTIL))


def test_detection_sources_by_strongest_evidence_and_bank_trust():
    r = figures(mixed_records())
    assert r["detection_sources"] == {"authority_hash": 2, "internal_hash": 1, "partner_hash": 1, "classifier": 2,
                                      "user_report": 1, "reviewer": 1, "fused_risk": 2}


@pytest.mark.parametrize(("evidence", "source"), [
    ([review_ev(T0), hash_ev(T0 - 9, "internal-confirmed"), hash_ev(T0 - 5)], "authority_hash"),
    ([hash_ev(T0, "partner-x"), hash_ev(T0, "internal-confirmed")], "internal_hash"),
    ([user_report_ev(T0), classifier_ev(T0), hash_ev(T0, "partner-x")], "partner_hash"),
    ([review_ev(T0), user_report_ev(T0), classifier_ev(T0)], "classifier"),
    ([risk_ev(T0), review_ev(T0), user_report_ev(T0)], "user_report"),
    ([risk_ev(T0), review_ev(T0)], "reviewer"),
    ([risk_ev(T0), {"kind": "context", "ts_ms": T0, "visibility": "private"}], "fused_risk"),
])
def test_the_strongest_evidence_names_the_source(evidence, source):
    sources = figures([("enforcement.actions", decision("st-1", "block", T0, evidence))])["detection_sources"]
    assert {s: n for s, n in sources.items() if n} == {source: 1}


def test_human_decisions_are_reviewer_verdicts_and_reinstatements():
    r = figures(mixed_records())
    # the reviewer's block and the reinstatement; a missed deadline's re-escalation is automated
    assert r["automation"] == {"automated": 9, "human": 2}


def test_without_reviews_escalations_are_open_until_their_deadline_then_missed():
    esc = decision("st-1", "escalate", T0, [classifier_ev(T0)], rule="csam-classifier", priority="P0",
                   due=T0 + 5 * MIN)
    before = figures([("enforcement.escalations", esc)], T0, T0 + 5 * MIN)
    assert before["review_sla"]["P0"] == {"escalations": 1, "met": 0, "missed": 0, "open": 1, "met_rate": None}
    after = figures([("enforcement.escalations", esc)], T0, T0 + 6 * MIN)
    assert after["review_sla"]["P0"] == {"escalations": 1, "met": 0, "missed": 1, "open": 0, "met_rate": 0.0}
    assert after["reviewer_overturn"] == {}


def test_review_sla_per_priority():
    sla = figures(mixed_records())["review_sla"]
    # P0: the CSAM escalation confirmed in time (needs_more_context does not settle it), the benign one late
    assert sla["P0"] == {"escalations": 2, "met": 1, "missed": 1, "open": 0, "met_rate": 0.5}
    # P1: the hash block's confirm task is never reviewed (missed at +31 min); the breach's P1 met by
    # the stream-wide benign verdict at +130 min
    assert sla["P1"] == {"escalations": 2, "met": 1, "missed": 1, "open": 0, "met_rate": 0.5}
    assert sla["P2"] == {"escalations": 1, "met": 0, "missed": 1, "open": 0, "met_rate": 0.0}
    assert sla["P3"] == {"escalations": 1, "met": 0, "missed": 0, "open": 1, "met_rate": None}


def test_a_deadline_after_what_the_records_reach_is_open_not_missed():
    esc = decision("st-1", "escalate", T0, [classifier_ev(T0)], rule="csam-classifier", priority="P0",
                   due=T0 + 5 * MIN)
    records = [("enforcement.escalations", esc)]
    # the period runs on for a day, but the records were read a minute after the escalation
    early = compute_report(EnforcementLog.of(records), SINCE, UNTIL, TRUST, as_of_ms=T0 + MIN).as_record()
    assert early["review_sla"]["P0"]["open"] == 1 and early["period"]["as_of_ms"] == T0 + MIN
    assert figures(records)["review_sla"]["P0"]["missed"] == 1
    assert EnforcementLog.of(mixed_records()).newest_ms == T0 + 300 * MIN  # the reinstatement
    mixed = mixed_records()
    later = compute_report(EnforcementLog.of(mixed), SINCE, UNTIL, TRUST, as_of_ms=T0 + 300 * MIN).as_record()
    assert_report_matches(later, expected_figures(mixed, SINCE, UNTIL, T0 + 300 * MIN))


def test_a_verdict_at_the_deadline_meets_it_and_one_after_until_is_not_known_yet():
    esc = decision("st-1", "escalate", T0, [classifier_ev(T0)], rule="csam-classifier", priority="P0",
                   due=T0 + 5 * MIN)
    on_time = [("enforcement.escalations", esc), ("review.verdicts", verdict("st-1", "benign", T0 + 5 * MIN))]
    assert figures(on_time)["review_sla"]["P0"]["met"] == 1
    assert figures(on_time, T0, T0 + 5 * MIN)["review_sla"]["P0"]["open"] == 1


def test_a_benign_verdict_naming_one_escalation_leaves_the_others():
    first = decision("st-1", "escalate", T0, [risk_ev(T0)], rule="fused-risk-elevated", priority="P3",
                     due=T0 + 1440 * MIN)
    second = decision("st-1", "escalate", T0 + MIN, [classifier_ev(T0 + MIN)], rule="csam-classifier",
                      priority="P0", due=T0 + 6 * MIN)
    r = figures([("enforcement.escalations", first), ("enforcement.escalations", second),
                 ("review.verdicts", verdict("st-1", "benign", T0 + 2 * MIN, second["decision_id"]))])
    assert r["reviewer_overturn"] == {"csam-classifier": {"reviewed": 1, "benign": 1, "overturn_rate": 1.0}}
    assert r["review_sla"]["P3"]["open"] == 1


def test_overturn_rate_per_rule():
    assert figures(mixed_records())["reviewer_overturn"] == {
        "csam-classifier": {"reviewed": 2, "benign": 1, "overturn_rate": 0.5},
        "review-sla-breach": {"reviewed": 1, "benign": 1, "overturn_rate": 1.0},
        "user-reports-burst": {"reviewed": 1, "benign": 1, "overturn_rate": 1.0},
    }


def test_appeals_and_reversals():
    records = mixed_records()
    records.append(("review.appeals", appeal("apl-1", "st-partner", "dec-" + "0" * 32, T0 + 201 * MIN)))  # again
    assert figures(records)["appeals"] == {"received": 2, "reversals": 1, "reversal_rate": 0.5}


def test_time_from_first_evidence_counts_from_the_streams_earliest_evidence():
    t = figures(mixed_records())["time_to_action_ms"]
    # the reviewer's block on st-csam at +6 min counts from the classifier signal at +2 min
    assert t["block"] == {"count": 3, "median": 500, "p95": 4 * MIN}
    assert t["restrict"] == {"count": 1, "median": 9, "p95": 9}
    assert "reinstate" not in t and t["all"]["count"] == 10  # a reinstatement acts on an appeal, not evidence


def test_nearest_rank():
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([7], 0.95) == 7
    assert nearest_rank([4, 1, 3, 2], 0.5) == 2
    assert nearest_rank(list(range(1, 101)), 0.95) == 95
    assert nearest_rank(list(range(1, 21)), 0.95) == 19


def test_reports_preservation_and_categories():
    r = figures(mixed_records())
    assert r["authority_reports"] == {"filed": 2, "by_trigger": {"policy": 1, "reviewer": 1},
                                      "by_incident_type": {"child_sexual_abuse_material": 2},
                                      "preservation_requests": 2}
    # st-csam's escalation takes the stream's confirmed category; the reviewer's block its own
    assert r["actions"]["by_type_and_category"]["block"] == {"B1": 1, "uncategorised": 2}
    assert r["actions"]["by_type_and_category"]["escalate"]["B1"] == 1


def test_re_deliveries_count_once_and_bad_records_are_counted_not_fatal():
    records = mixed_records()
    records += records[:3] + [r for r in records if r[0] == "streamsafe.dead-letter"]
    records += [("enforcement.actions", {"decision_id": 7}), ("review.verdicts", {"stream_id": "x"}),
                ("enforcement.reports", None), ("livestream.metadata", {"stream_id": "x"})]
    r = figures(records)
    assert_report_matches(r, expected_figures(mixed_records(), SINCE, UNTIL))
    assert r["records"]["unreadable"] == {"enforcement.actions": 1, "review.verdicts": 1}


class _Figures(HTMLParser):
    """The text of every element carrying data-figure, and the embedded JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, list[str]] = {}
        self._open: list[str | None] = []
        self.data = ""
        self._in_data = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._open.append(a.get("data-figure"))
        if a.get("data-figure"):
            self.found.setdefault(a["data-figure"], []).append("")
        self._in_data = a.get("id") == "transparency-data"

    def handle_endtag(self, tag):
        self._open.pop()
        self._in_data = False

    def handle_data(self, data):
        if self._open and self._open[-1]:
            self.found[self._open[-1]][-1] += data
        if self._in_data:
            self.data += data


@pytest.mark.parametrize("records", [[], mixed_records()], ids=["empty", "mixed"])
def test_html_and_csv_show_every_figure_of_the_json(records):
    report = compute_report(EnforcementLog.of(records), SINCE, UNTIL, TRUST)
    page = to_html(report)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not fetch anything"
    parser = _Figures()
    parser.feed(page)
    record = report.as_record()
    assert orjson.loads(parser.data) == record
    numbers = {f"{s}/{p}": v for s in record if s not in ("schema_version", "period")
               for p, v in flatten(record[s])}
    assert set(parser.found) == set(numbers)
    for path, texts in parser.found.items():
        assert all(parse_figure(t) == numbers[path] for t in texts), (path, texts, numbers[path])
        assert all(t == figure_text(path, numbers[path]) for t in texts)
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert {f"{r['section']}/{r['figure']}": r["value"] for r in rows if r["section"] != "period"} == \
        {p: "" if v is None else str(v) for p, v in numbers.items()}


def test_parse_time():
    assert parse_time("2025-11-28") == 1_764_288_000_000
    assert parse_time("2025-11-28T10:00:00+01:00") == 1_764_320_400_000
    assert parse_time("2025-11-28T09:00:00Z") == 1_764_320_400_000
    assert parse_time("1764320400000") == 1_764_320_400_000


def test_cli_from_a_recording(tmp_path):
    records = [r for r in mixed_records() if r[0] != "review.appeals"]  # not a topic of this contract yet
    recording = tmp_path / "rec.jsonl"
    recording.write_bytes(b"".join(orjson.dumps({"topic": t, "key": v.get("stream_id"), "value": v}) + b"\n"
                                   for t, v in records))
    out, table = tmp_path / "r.html", tmp_path / "r.csv"
    result = CliRunner().invoke(cli, ["transparency", "--recording", str(recording), "--since", str(SINCE),
                                      "--until", str(UNTIL), "--json", "--out", str(out), "--csv", str(table)])
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.stdout)
    assert_report_matches(shown, expected_figures(records, SINCE, UNTIL))
    assert f'id="transparency-data">{orjson.dumps(shown).decode()}' in out.read_text()
    assert table.read_text().startswith("section,figure,value\n")


def test_cli_needs_an_output_and_an_ordered_period(tmp_path):
    recording = tmp_path / "rec.jsonl"
    recording.write_text("")
    nothing = CliRunner().invoke(cli, ["transparency", "--recording", str(recording)])
    assert nothing.exit_code == 2 and "--out" in nothing.output
    backwards = CliRunner().invoke(cli, ["transparency", "--recording", str(recording), "--json",
                                         "--since", "2025-12-01", "--until", "2025-11-01"])
    assert backwards.exit_code == 2 and "--since" in backwards.output


def test_without_chromium_the_browser_test_skips_except_in_ci(monkeypatch):
    import shutil

    from tests.transparency_support import chromium_or_skip

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        chromium_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        chromium_or_skip()
