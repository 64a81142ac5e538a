"""Report packets (``enforcement.reports``) as NCMEC CyberTipline XML.

NCMEC's reporting API takes a ``<report>`` document (``/submit``), then each file
(``/upload``) and its ``<fileDetails>`` (``/fileinfo``), which name the report and file
ids NCMEC returned. So one packet becomes:

* :func:`report_document`: the ``<report>``, element order as the schema's sequences
  demand: ``incidentSummary``, ``internetDetails`` (the stream's page as a web-page
  incident; the live chat as a chat incident when chat evidence exists), ``reporter``
  (from the platform profile), ``personOrUserReported`` (the broadcaster; for an account
  report, the viewer, with the streams involved: each stream's page is a web-page incident), and
  ``additionalInfo`` (how StreamSafe found it: matches, classifiers, decisions, review).
* :func:`file_details_documents`: one ``<fileDetails>`` per hash-matched frame, with
  ``fileAnnotations/liveStreaming``, ``industryClassification`` (the reviewer's A1..B2,
  only when the profile says the company has signed NCMEC's hash-sharing MOU) and the
  frame's hashes as ``originalFileHash``. ``reportId`` and ``fileId`` are NCMEC's: the
  reporting service passes them, or fills the placeholders (0, ``frame-<seq>``).

Pure code: no broker, no Faust. A packet that cannot be mapped raises
:class:`UnmappableReport` with a one-line reason.
"""

from __future__ import annotations

import datetime
import json
from functools import cache
from typing import Any

import fastjsonschema
from lxml import etree

from streamsafe.errors import StreamSafeError
from streamsafe.events.contract import REPORTS, load_contract
from streamsafe.reports.profile import PlatformProfile

__all__ = [
    "HASH_TYPES",
    "INCIDENT_TYPES",
    "UnmappableReport",
    "check_packet",
    "file_details_documents",
    "live_when_decided",
    "packet_from_json",
    "report_document",
    "serialize",
]

INCIDENT_TYPES = {
    "child_sexual_abuse_material": "Child Pornography (possession, manufacture, and distribution)",
    "child_sex_trafficking_or_exploitation": "Child Sex Trafficking",
    "online_enticement": "Online Enticement of Children for Sexual Acts",
}
# originalFileHash/@hashType is free text in the schema; NCMEC's examples spell MD5, SHA1
HASH_TYPES = {"md5": "MD5", "pdq": "PDQ", "sha256": "SHA256"}
CLASSIFICATIONS = ("A1", "A2", "B1", "B2")


class UnmappableReport(StreamSafeError):
    """A report packet cannot become a CyberTipline report (the message is one line)."""


@cache
def _packet_validator() -> Any:
    # without its relative $id, against which fastjsonschema would resolve "#/definitions/..." remotely
    schema = {k: v for k, v in load_contract()[REPORTS].schema.items() if k != "$id"}
    return fastjsonschema.compile(schema)


def check_packet(packet: Any) -> dict[str, Any]:
    """The packet, if it is a valid ``enforcement.reports`` record."""
    try:
        _packet_validator()(packet)
    except fastjsonschema.JsonSchemaValueException as exc:
        which = packet.get("report_id") if isinstance(packet, dict) else None
        raise UnmappableReport(f"{which or 'packet'}: not a valid report packet: {exc.message}") from None
    return packet


def _when(ms: int, profile: PlatformProfile) -> str:
    """xs:dateTime with an explicit offset (never a bare local time)."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).astimezone(profile.zone)
    return moment.isoformat(timespec="milliseconds")


def _sub(parent: etree._Element, tag: str, text: object = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = str(text)
    return element


def _opt(parent: etree._Element, tag: str, value: object) -> None:
    if value is not None:
        _sub(parent, tag, value)


def _first_decision(packet: dict[str, Any]) -> dict[str, Any] | None:
    return min(packet["decisions"], key=lambda d: d["decided"]["ms"], default=None)


def live_when_decided(packet: dict[str, Any]) -> bool:
    """The stream was on air when StreamSafe first acted on it: it had not ended (as far
    as the packet knows) before the first decision, or before the report without one."""
    first = _first_decision(packet)
    decided_ms = first["decided"]["ms"] if first else packet["times"]["reported"]["ms"]
    ended = packet["times"].get("stream_ended")
    return ended is None or ended["ms"] > decided_ms


def _incident_summary(report: etree._Element, packet: dict[str, Any], profile: PlatformProfile) -> None:
    summary = _sub(report, "incidentSummary")
    _sub(summary, "incidentType", INCIDENT_TYPES[packet["incident_type"]])
    _sub(summary, "platform", profile.platform)
    if profile.escalate_live and live_when_decided(packet):
        first = _first_decision(packet)
        acted = (f"{first['action']} at {_when(first['decided']['ms'], profile)}" if first
                 else f"reported at {_when(packet['times']['reported']['ms'], profile)}")
        _sub(summary, "escalateToHighPriority",
             f"The live stream was still broadcasting when {profile.platform} acted on it ({acted}): "
             "the abuse may be ongoing.")
    times = packet["times"]
    _sub(summary, "incidentDateTime", _when(times["first_evidence"]["ms"], profile))
    described = [f"first evidence in live stream {packet['stream_id']}",
                 f"last evidence {_when(times['last_evidence']['ms'], profile)}"]
    for key, label in (("stream_started", "stream started"), ("stream_ended", "stream ended")):
        if key in times:
            described.append(f"{label} {_when(times[key]['ms'], profile)}")
    _sub(summary, "incidentDateTimeDescription", "; ".join(described))


def _internet_details(report: etree._Element, packet: dict[str, Any], profile: PlatformProfile) -> None:
    visibility = packet["stream"].get("visibility")
    page = _sub(_sub(report, "internetDetails"), "webPageIncident", thirdPartyHostedContent="false")
    _sub(page, "url", profile.stream_url(packet["stream_id"]))
    _sub(page, "additionalInfo", f"Live video stream {packet['stream_id']} on {profile.platform}"
         + (f" (visibility: {visibility})" if visibility else "") + ".")
    for other in packet.get("streams_involved", ()):
        if other["stream_id"] != packet["stream_id"]:
            page = _sub(_sub(report, "internetDetails"), "webPageIncident", thirdPartyHostedContent="false")
            _sub(page, "url", profile.stream_url(other["stream_id"]))
            _sub(page, "additionalInfo", f"Live video stream {other['stream_id']} on {profile.platform}, "
                 "another stream the reported user's messages reached.")
    chat_ids = sorted({c["chat_message_id"] for c in packet["classifier_evidence"] if "chat_message_id" in c})
    if chat_ids and profile.doc.get("chat_client"):
        chat = _sub(_sub(report, "internetDetails"), "chatImIncident")
        _sub(chat, "chatClient", profile.doc["chat_client"])
        _sub(chat, "chatRoomName", f"live chat of stream {packet['stream_id']}")
        _sub(chat, "additionalInfo", "Chat messages flagged by classifiers (message ids, preserved): "
             + ", ".join(chat_ids) + ".")


def _person(parent: etree._Element, tag: str, person: dict[str, Any], with_address: bool = True) -> None:
    element = _sub(parent, tag)
    _sub(element, "firstName", person["first_name"])
    _sub(element, "lastName", person["last_name"])
    if "phone" in person:
        attrs = {"countryCallingCode": person["phone_country_code"]} if "phone_country_code" in person else {}
        _sub(element, "phone", person["phone"], **attrs)
    _sub(element, "email", person["email"])
    address = person.get("address")
    if with_address and address:
        where = _sub(element, "address", **({"type": address["type"]} if "type" in address else {}))
        for key, tag_name in (("street", "address"), ("city", "city"), ("zip_code", "zipCode"),
                              ("state", "state"), ("non_usa_state", "nonUsaState"), ("country", "country")):
            _opt(where, tag_name, address.get(key))


def _reporter(report: etree._Element, profile: PlatformProfile) -> None:
    reporter = _sub(report, "reporter")
    _person(reporter, "reportingPerson", profile.doc["reporter"])
    if "contact" in profile.doc:
        _person(reporter, "contactPerson", profile.doc["contact"])
    _opt(reporter, "companyTemplate", profile.doc.get("company_template"))
    _opt(reporter, "termsOfService", profile.doc.get("terms_of_service"))
    _opt(reporter, "legalURL", profile.doc.get("legal_url"))


def _reported_viewer(report: etree._Element, packet: dict[str, Any], profile: PlatformProfile) -> None:
    viewer = packet["reported_account"]["account_id"]
    user = _sub(report, "personOrUserReported")
    _sub(user, "espIdentifier", viewer)
    _sub(user, "espService", profile.platform)
    _opt(user, "profileUrl", profile.account_url(viewer))
    streams = packet.get("streams_involved", [])
    facts = [f"A viewer (not a broadcaster) whose messages in the live chats of {len(streams)} streams were flagged "
             f"as grooming; the streams' broadcasters were not verified as adults by {profile.platform} (likely "
             "minors): " + ", ".join(s["stream_id"] for s in streams) + "."]
    for s in streams:
        if s.get("broadcaster_id"):
            known = [f"Broadcaster of {s['stream_id']}: {s['broadcaster_id']}"]
            if s.get("account_age_days") is not None:
                known.append(f"account age {s['account_age_days']} days")
            if s.get("age_verified") is not None:
                known.append(f"age verified: {'yes' if s['age_verified'] else 'no'}")
            facts.append(", ".join(known) + ".")
    _sub(user, "additionalInfo", " ".join(facts))


def _reported_user(report: etree._Element, packet: dict[str, Any], profile: PlatformProfile) -> None:
    account = packet["reported_account"]
    if account.get("role") == "viewer" and account.get("account_id"):
        _reported_viewer(report, packet, profile)
        return
    broadcaster = account.get("broadcaster_id")
    if not broadcaster:
        return
    user = _sub(report, "personOrUserReported")
    _sub(user, "espIdentifier", broadcaster)
    _sub(user, "espService", profile.platform)
    _opt(user, "profileUrl", profile.account_url(broadcaster))
    facts = ["The broadcaster of the live stream."]
    if account.get("account_age_days") is not None:
        facts.append(f"Account age at the incident: {account['account_age_days']} days.")
    if account.get("age_verified") is not None:
        facts.append(f"Age verified by {profile.platform}: {'yes' if account['age_verified'] else 'no'}.")
    _sub(user, "additionalInfo", " ".join(facts))


def _how_found(packet: dict[str, Any], profile: PlatformProfile) -> str:
    lines = [f"{profile.platform} report {packet['report_id']} (trigger: {packet['trigger']}); "
             f"evidence preserved under {packet['preservation_id']}."]
    for m in packet["hash_matches"]:
        turned = f", shown {m['transform']}" if "transform" in m else ""
        lines.append(f"Frame {m['frame_seq']} at {_when(m['frame']['ms'], profile)} matched {m['signal_type'].upper()} "
                     f"list {m['bank']} entry {m['entry_id']} at distance {m['distance']}{turned}.")
    for c in packet["classifier_evidence"]:
        where = (f" on frame {c['frame_seq']}" if "frame_seq" in c
                 else f" on chat message {c['chat_message_id']}" if "chat_message_id" in c else "")
        lines.append(f"Automated classifier {c['classifier']} scored {c['score']}{where} "
                     f"at {_when(c['at']['ms'], profile)}.")
    for d in packet["decisions"]:
        why = f" by rule {d['rule']}" if "rule" in d else ""
        lines.append(f"Action {d['action']}{why} (policy {d['policy_version']}) "
                     f"at {_when(d['decided']['ms'], profile)}.")
    for v in packet["verdicts"]:
        category = f", category {v['category']}" if "category" in v else ""
        lines.append(f"Human review: {v['verdict']}{category} by reviewer {v['reviewer_id']} "
                     f"at {_when(v['at']['ms'], profile)}.")
    if not packet["verdicts"]:
        lines.append(f"No person at {profile.platform} had reviewed the content when this report was made.")
    return "\n".join(lines)


def report_document(packet: Any, profile: PlatformProfile) -> etree._Element:
    """The ``<report>`` for one packet (see the module docstring for the mapping)."""
    packet = check_packet(packet)
    if packet["incident_type"] not in INCIDENT_TYPES:  # the packet schema's enum, checked again on purpose
        raise UnmappableReport(f"{packet['report_id']}: no CyberTipline incident type for "
                               f"{packet['incident_type']!r}")
    report = etree.Element("report")
    _incident_summary(report, packet, profile)
    _internet_details(report, packet, profile)
    _reporter(report, profile)
    _reported_user(report, packet, profile)
    _sub(report, "additionalInfo", _how_found(packet, profile))
    return report


def _viewed(packet: dict[str, Any]) -> bool:
    return any(v["verdict"] == "confirmed" for v in packet["verdicts"])


def file_details_documents(packet: Any, profile: PlatformProfile, ncmec_report_id: int = 0,
                           file_ids: dict[int, str] | None = None) -> dict[int, etree._Element]:
    """One ``<fileDetails>`` per hash-matched frame (by frame sequence number).

    ``ncmec_report_id`` and ``file_ids`` (frame seq -> NCMEC file id) are what NCMEC
    returned for the submitted report and the uploaded frames; without them the
    documents carry 0 and ``frame-<seq>`` for the reporting service to replace."""
    packet = check_packet(packet)
    by_frame: dict[int, list[dict[str, Any]]] = {}
    for match in packet["hash_matches"]:
        by_frame.setdefault(match["frame_seq"], []).append(match)
    visibility = packet["stream"].get("visibility")
    category = packet.get("category")
    documents: dict[int, etree._Element] = {}
    for seq, matches in sorted(by_frame.items()):
        details = etree.Element("fileDetails")
        _sub(details, "reportId", ncmec_report_id)
        _sub(details, "fileId", (file_ids or {}).get(seq, f"frame-{seq}"))
        _sub(details, "originalFileName", f"{packet['stream_id']}-frame-{seq}")
        _sub(details, "uploadedToEspTimestamp", _when(matches[0]["frame"]["ms"], profile))
        _sub(details, "locationOfFile", profile.stream_url(packet["stream_id"]))
        _sub(details, "fileViewedByEsp", "true" if _viewed(packet) else "false")
        if visibility in ("public", "private"):
            _sub(details, "publiclyAvailable", "true" if visibility == "public" else "false")
        _sub(details, "fileRelevance", "Reported")
        _sub(_sub(details, "fileAnnotations"), "liveStreaming", "true")
        if profile.industry_classification and category in CLASSIFICATIONS:
            _sub(details, "industryClassification", category)
        seen: set[tuple[str, str]] = set()
        for match in matches:
            value = match.get("frame_hash")
            if value and (match["signal_type"], value) not in seen:
                seen.add((match["signal_type"], value))
                _sub(details, "originalFileHash", value, hashType=HASH_TYPES[match["signal_type"]])
        _sub(details, "additionalInfo", f"Frame {seq} of live stream {packet['stream_id']}, captured at "
             f"{_when(matches[0]['frame']['ms'], profile)}; matched "
             + ", ".join(f"{m['bank']} entry {m['entry_id']} ({m['signal_type'].upper()} distance {m['distance']})"
                         for m in matches) + ".")
        documents[seq] = details
    return documents


def serialize(document: etree._Element) -> bytes:
    """UTF-8 XML with a declaration, indented for the people who read these too."""
    tree = etree.ElementTree(document)
    etree.indent(tree, space="  ")
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


def packet_from_json(line: bytes | str) -> Any:
    """A packet from one JSON line; :class:`UnmappableReport` if it is not JSON."""
    try:
        return json.loads(line)
    except ValueError as exc:
        raise UnmappableReport(f"not JSON: {exc.msg} (column {exc.colno})") from None
