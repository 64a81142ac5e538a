"""Report packets -> NCMEC CyberTipline XML: the mapping, checked field by field and
against NCMEC's own schema with a real XSD validator."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from lxml import etree

from streamsafe.cli import cli
from streamsafe.events.contract import REPORTS, load_contract
from streamsafe.reports.cybertip import (
    INCIDENT_TYPES,
    UnmappableReport,
    file_details_documents,
    live_when_decided,
    report_document,
    serialize,
)
from streamsafe.reports.profile import ProfileError, load_profile, profile_from_mapping
from tests.ncmec import XSD, assert_valid, needs_xsd, xsd

EXAMPLE_PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "reports" / "platform-profile.example.yaml"
MD5 = "0123456789abcdef0123456789abcdef"


def profile_doc(**changes):
    doc = yaml.safe_load(EXAMPLE_PROFILE.read_text())
    doc.update(changes)
    return doc


@pytest.fixture
def profile():
    return profile_from_mapping(profile_doc())


@pytest.fixture
def packet():
    return copy.deepcopy(dict(load_contract()[REPORTS].example))


def at(ms):
    return {"ms": ms, "utc": "2025-11-28T10:00:00.000Z"}  # the mapping reads ms; utc only has to be well-formed


def children(element):
    return [child.tag for child in element]


def test_the_example_profile_is_valid_and_says_it_is_an_example():
    assert load_profile(EXAMPLE_PROFILE).platform == "Example Live"
    assert "EXAMPLE" in EXAMPLE_PROFILE.read_text().splitlines()[0]


@needs_xsd
def test_the_contract_example_packet_gives_valid_report_and_file_details(packet, profile):
    report = report_document(packet, profile)
    assert_valid(report)
    assert_valid(serialize(report))  # what is written to disk, too
    (details,) = file_details_documents(packet, profile).values()
    assert_valid(details)


def test_report_elements_come_in_the_order_the_schema_demands(packet, profile):
    packet["classifier_evidence"].append({"classifier": "grooming_text", "score": 0.8, "at": at(1764324070000),
                                          "chat_message_id": "msg-77"})
    report = report_document(packet, profile)
    assert children(report) == ["incidentSummary", "internetDetails", "internetDetails", "reporter",
                                "personOrUserReported", "additionalInfo"]
    assert children(report.find("incidentSummary")) == ["incidentType", "platform", "escalateToHighPriority",
                                                        "incidentDateTime", "incidentDateTimeDescription"]
    assert [children(d)[0] for d in report.findall("internetDetails")] == ["webPageIncident", "chatImIncident"]


@needs_xsd
@pytest.mark.parametrize("break_it", ["reporter_first", "no_incident_time", "unknown_incident_type",
                                      "annotation_not_fixed_true", "date_without_time"])
def test_a_broken_document_fails_validation(packet, profile, break_it):
    """The validator is real: each of these breaks one rule of NCMEC's schema."""
    report = report_document(packet, profile)
    details = next(iter(file_details_documents(packet, profile).values()))
    summary = report.find("incidentSummary")
    target = report
    if break_it == "reporter_first":
        report.insert(1, report.find("reporter"))  # now before internetDetails: out of sequence
    elif break_it == "no_incident_time":
        summary.remove(summary.find("incidentDateTime"))
    elif break_it == "unknown_incident_type":
        summary.find("incidentType").text = "Live Streaming"
    elif break_it == "annotation_not_fixed_true":
        details.find("fileAnnotations/liveStreaming").text = "false"
        target = details
    elif break_it == "date_without_time":
        summary.find("incidentDateTime").text = "2025-11-28"
    with pytest.raises(AssertionError, match=r"not valid against cyber_tipline\.xsd"):
        assert_valid(target)


@needs_xsd
def test_the_export_names_the_schema_violation(packet, tmp_path):
    """A profile value the JSON Schema lets through but NCMEC's list does not (a state code)
    is caught by the XSD when --xsd is given: that packet is not written, and the reason is
    one line."""
    from streamsafe.reports.export import export_cybertip, load_xsd

    doc = profile_doc()
    doc["reporter"]["address"]["state"] = "ZZ"
    result = export_cybertip([("line 1", packet)], profile_from_mapping(doc), tmp_path, load_xsd(XSD))
    assert result.reports == [] and list(tmp_path.iterdir()) == []
    (problem,) = result.problems
    assert "does not validate against the CyberTipline schema" in problem and "state" in problem
    assert "\n" not in problem


def test_the_export_writes_a_reports_highest_revision_once(packet, profile, tmp_path):
    """A report sent again, completed (its broadcaster named once known), has the same id and a
    higher revision: the export writes that one, whichever order the packets are read in."""
    from streamsafe.reports.export import export_cybertip

    first = copy.deepcopy(packet)
    first["reported_account"]["broadcaster_id"] = None
    completed = {**copy.deepcopy(packet), "schema_version": 2, "revision": 2}
    frames = len(packet["hash_matches"])
    for order in ([first, completed, first], [completed, first]):
        out = tmp_path / str(len(order))
        result = export_cybertip([(f"line {i}", p) for i, p in enumerate(order)], profile, out)
        assert result.problems == [] and [p.name for p in result.reports] == [f"{packet['report_id']}.xml"]
        assert len(result.file_details) == frames and len(list(out.iterdir())) == 1 + frames
        document = etree.parse(str(result.reports[0]))
        assert document.findtext("personOrUserReported/espIdentifier") == packet["reported_account"]["broadcaster_id"]
    # the revision's frames replace the first's: one the first had and the revision lost is gone
    moved = copy.deepcopy(completed)
    moved["hash_matches"][0]["frame_seq"] = 121
    out = tmp_path / "moved"
    result = export_cybertip([("line 0", first), ("line 1", moved), ("line 2", first)], profile, out)
    assert result.problems == []
    assert sorted(p.name for p in result.file_details) == [f"{packet['report_id']}.frame-121.xml"]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{packet['report_id']}.xml",
                                                             f"{packet['report_id']}.frame-121.xml"])
    # a revision that cannot be exported leaves the first written, and is named
    broken = {**copy.deepcopy(completed), "incident_type": "no-such-type"}
    out = tmp_path / "broken"
    result = export_cybertip([("line 0", first), ("line 1", broken)], profile, out)
    assert [p.name for p in result.reports] == [f"{packet['report_id']}.xml"] and len(result.problems) == 1
    assert etree.parse(str(result.reports[0])).find("personOrUserReported") is None


@pytest.mark.parametrize(("incident_type", "ncmec"), sorted(INCIDENT_TYPES.items()))
def test_incident_types(packet, profile, incident_type, ncmec):
    packet["incident_type"] = incident_type
    assert report_document(packet, profile).findtext("incidentSummary/incidentType") == ncmec
    if XSD is not None:
        assert_valid(report_document(packet, profile))


def test_stream_url_platform_and_broadcaster_come_from_the_profile(packet, profile):
    report = report_document(packet, profile)
    assert report.findtext("incidentSummary/platform") == "Example Live"
    assert report.findtext("internetDetails/webPageIncident/url") == "https://live.example/st-7f3a91"
    user = report.find("personOrUserReported")
    assert user.findtext("espIdentifier") == "acct-20931"
    assert user.findtext("profileUrl") == "https://live.example/u/acct-20931"
    reporter = report.find("reporter/reportingPerson")
    assert reporter.findtext("email") == "cybertipline@live.example"
    assert reporter.find("phone").get("countryCallingCode") == "+1"


def test_no_broadcaster_no_reported_user(packet, profile):
    packet["reported_account"]["broadcaster_id"] = None
    report = report_document(packet, profile)
    assert report.find("personOrUserReported") is None
    if XSD is not None:
        assert_valid(report)


def test_escalated_when_the_stream_was_live_when_decided(packet, profile):
    assert live_when_decided(packet)
    reason = report_document(packet, profile).findtext("incidentSummary/escalateToHighPriority")
    assert "still broadcasting" in reason and "block at 2025-11-28T10:01:01.012+00:00" in reason


def test_not_escalated_when_the_stream_had_ended_before_the_decision(packet, profile):
    packet["times"]["stream_ended"] = at(packet["decisions"][0]["decided"]["ms"] - 1)
    assert not live_when_decided(packet)
    report = report_document(packet, profile)
    assert report.find("incidentSummary/escalateToHighPriority") is None
    assert "stream ended" in report.findtext("incidentSummary/incidentDateTimeDescription")


def test_escalation_can_be_turned_off_in_the_profile(packet):
    report = report_document(packet, profile_from_mapping(profile_doc(escalate_live=False)))
    assert report.find("incidentSummary/escalateToHighPriority") is None


def test_dates_carry_the_profile_zone_offset(packet):
    report = report_document(packet, profile_from_mapping(profile_doc(time_zone="America/New_York")))
    # 10:01:01 UTC on 28 November is 05:01:01 Eastern Standard Time
    assert report.findtext("incidentSummary/incidentDateTime") == "2025-11-28T05:01:01.000-05:00"
    if XSD is not None:
        assert_valid(report)


def test_frames_become_file_details_with_hashes_and_live_streaming(packet, profile):
    frame = packet["hash_matches"][0]
    packet["hash_matches"].append({**frame, "signal_type": "md5", "bank": "internal-confirmed",
                                   "entry_id": "ic:9", "distance": 0, "frame_hash": MD5})
    packet["hash_matches"].append({**frame, "frame_seq": 130, "frame": at(1764324071000), "transform": "flipx"})
    documents = file_details_documents(packet, profile, ncmec_report_id=4242, file_ids={120: "f-abc"})
    assert sorted(documents) == [120, 130]
    first = documents[120]
    assert first.findtext("reportId") == "4242" and first.findtext("fileId") == "f-abc"
    assert documents[130].findtext("fileId") == "frame-130"
    hashes = [(h.get("hashType"), h.text) for h in first.findall("originalFileHash")]
    assert hashes == [("PDQ", frame["frame_hash"]), ("MD5", MD5)]
    assert first.findtext("fileAnnotations/liveStreaming") == "true"
    assert first.findtext("fileViewedByEsp") == "true"  # a reviewer confirmed it
    assert first.findtext("publiclyAvailable") == "false"  # a private stream
    assert first.findtext("uploadedToEspTimestamp") == "2025-11-28T10:01:01.000+00:00"
    assert first.find("industryClassification") is None  # the example company has no MOU
    if XSD is not None:
        for document in documents.values():
            assert_valid(document)


def test_industry_classification_only_with_the_mou_and_an_industry_category(packet):
    mou = profile_from_mapping(profile_doc(industry_classification=True))
    (details,) = file_details_documents(packet, mou).values()
    assert details.findtext("industryClassification") == "B2"
    packet["category"] = "grooming"
    (details,) = file_details_documents(packet, mou).values()
    assert details.find("industryClassification") is None


def test_not_viewed_without_a_confirming_reviewer(packet, profile):
    packet["verdicts"] = []
    packet["trigger"] = "policy"
    (details,) = file_details_documents(packet, profile).values()
    assert details.findtext("fileViewedByEsp") == "false"
    assert "No person at Example Live had reviewed" in report_document(packet, profile).findtext("additionalInfo")


def test_chat_evidence_without_a_chat_client_stays_in_additional_info(packet):
    packet["classifier_evidence"].append({"classifier": "grooming_text", "score": 0.8, "at": at(1764324070000),
                                          "chat_message_id": "msg-77"})
    doc = profile_doc()
    del doc["chat_client"]
    report = report_document(packet, profile_from_mapping(doc))
    assert [children(d)[0] for d in report.findall("internetDetails")] == ["webPageIncident"]
    assert "chat message msg-77" in report.findtext("additionalInfo")


@pytest.mark.parametrize("damage", ["missing_field", "bad_incident_type", "not_an_object"])
def test_a_packet_that_cannot_be_mapped_gives_one_line(packet, profile, damage):
    if damage == "missing_field":
        del packet["times"]
    elif damage == "bad_incident_type":
        packet["incident_type"] = "spam"
    else:
        packet = ["not", "a", "packet"]
    with pytest.raises(UnmappableReport) as caught:
        report_document(packet, profile)
    assert "not a valid report packet" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("change", "message"), [
    ({"stream_url": "https://live.example/streams"}, "stream_url must match pattern"),
    ({"reporter": {"first_name": "A", "last_name": "B"}}, "must contain ['email']"),
    ({"time_zone": "Mars/Olympus"}, "unknown time_zone"),
    ({"reporter_name": "A"}, "must not contain"),
])
def test_a_bad_profile_is_one_line(change, message):
    with pytest.raises(ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        profile_from_mapping(profile_doc(**change))
    assert "\n" not in str(caught.value)


def write_lines(path, *items):
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


def test_cli_from_file_exports_the_good_and_names_the_bad(packet, tmp_path):
    second = copy.deepcopy(packet)
    second["report_id"] = "rep-" + "1" * 32
    broken = copy.deepcopy(packet)
    broken["report_id"] = "rep-" + "2" * 32
    del broken["reported_account"]
    source = write_lines(tmp_path / "packets.jsonl", packet, "{not json", broken, second, packet)
    out = tmp_path / "out"
    args = ["reports", "export", "--format", "cybertip-xml", "--profile", str(EXAMPLE_PROFILE),
            "--from", str(source), "--out", str(out)]
    if XSD is not None:
        args += ["--xsd", str(XSD)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.splitlines()
    assert "cannot export packets.jsonl line 2: not JSON" in lines[0]
    assert lines[1].startswith(f"cannot export packets.jsonl line 3: {broken['report_id']}: not a valid report")
    assert "wrote 2 CyberTipline reports and 2 frame fileDetails" in lines[2] and "2 packets not exported" in lines[2]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{rid}{suffix}" for rid in (packet["report_id"], second["report_id"]) for suffix in (".xml", ".frame-120.xml"))
    # what the command prints never carries report contents: no hashes, no account ids
    assert packet["hash_matches"][0]["frame_hash"] not in result.output and "acct-20931" not in result.output
    if XSD is not None:
        for path in out.iterdir():
            assert_valid(path)


def test_cli_bad_profile_is_one_error_line_and_no_broker(tmp_path):
    bad = tmp_path / "profile.yaml"
    bad.write_text("platform: X\nstream_url: https://x/{stream_id}\n")
    result = CliRunner().invoke(cli, ["reports", "export", "--format", "cybertip-xml", "--profile", str(bad),
                                      "--out", str(tmp_path / "out"), "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {bad}: invalid platform profile: data must contain ['reporter'] properties"


def test_cli_unreachable_broker_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["reports", "export", "--format", "cybertip-xml", "--profile",
                                      str(EXAMPLE_PROFILE), "--out", str(tmp_path), "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach the broker at 127.0.0.1:1"), result.output
    assert len(result.output.strip().splitlines()) == 1


@needs_xsd
def test_schema_violation_line_from_the_validator_is_readable():
    document = etree.fromstring(b"<report><reporter><reportingPerson/></reporter></report>")
    assert not xsd().validate(document)
    assert "incidentSummary" in str(xsd().error_log.last_error.message)


def test_a_string_xml_cannot_hold_is_one_line_not_a_traceback(packet, profile, tmp_path):
    from streamsafe.reports.export import export_cybertip

    broken = copy.deepcopy(packet)
    broken["report_id"] = "rep-" + "3" * 32
    broken["stream_id"] = "st-\x00bad"
    result = export_cybertip([("line 1", broken), ("line 2", packet)], profile, tmp_path)
    (problem,) = result.problems
    assert problem.startswith(f"line 1: {broken['report_id']}: cannot be written as XML") and "\n" not in problem
    assert [p.name for p in result.reports] == [f"{packet['report_id']}.xml"]


def test_an_output_directory_that_cannot_be_made_is_one_line(packet, profile, tmp_path):
    from streamsafe.errors import ConfigError
    from streamsafe.reports.export import export_cybertip

    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create the output directory"):
        export_cybertip([("line 1", packet)], profile, tmp_path / "file" / "out")
