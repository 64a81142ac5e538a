"""The hostile corpus for ``bench/drills.py``: bad input of many kinds for the five input
topics, a few known-hash canaries mixed in, and an independent oracle for the reason the
contract (README, ``topics/``) gives each record.

The oracle parses with the standard library (strict: no NaN/Infinity), validates with
``jsonschema`` (not the worker's fastjsonschema) and applies the documented order of checks:
oversized, malformed_json, not_an_object, unknown_version, implausible_time (an event time
outside 2000..2100 in epoch milliseconds), schema_violation, key_mismatch.
Where the contract leaves the outcome to the implementation (integers beyond 64 bits, lone
surrogate escapes) the label is ``EDGE``: accepted or dead-lettered, either is right.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson

from streamsafe.events.contract import (
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    METADATA,
    REVIEW_VERDICTS,
    USER_REPORTS,
    TopicSpec,
)
from streamsafe.events.decode import EARLIEST_MS, LATEST_MS  # the contract's bounds on every event time

INPUTS = (METADATA, FRAME_HASHES, CLASSIFIER_SIGNALS, USER_REPORTS, REVIEW_VERDICTS)
EDGE = "edge"
BIG = 990_000  # bytes of a "~0.99 MB" record: under the broker's 1 MiB and the producer's limit
ODD_IDS = ["st-\x1b[31mred\x1b[0m", "st-\u202eevil\u202c", "st-\u200b\u200d", "st-\x00nul", "st-line\n\r",
           "st-\u2066iso\u2069", "st-\U0001f600", "st- ", "s" * 128, "\x07\x08\t", "st-\\u0000", "st-%s%n"]
Template = Callable[[str], tuple[bytes | None, bytes | None]]


@dataclass(frozen=True, slots=True)
class Record:
    topic: str  # contract name
    key: bytes | None
    value: bytes | None
    family: str
    expect: str | None  # the contract's dead-letter reason, None (accepted) or EDGE
    canary: int = -1  # index of the canary stream this record carries (-1: none)


def canary_md5(i: int) -> str:
    return hashlib.md5(f"streamsafe-drill-canary-{i}".encode()).hexdigest()


def _now() -> int:
    return int(time.time() * 1000)


def base_doc(spec: TopicSpec, sid: str) -> dict[str, Any]:
    """The contract's example, made harmless (no confirmed verdict, a low score)."""
    doc = copy.deepcopy(dict(spec.example))
    doc["stream_id"] = sid
    if "ts_ms" in doc:
        doc["ts_ms"] = _now()
    if spec.name == CLASSIFIER_SIGNALS:
        doc["score"] = 0.3
    if spec.name == REVIEW_VERDICTS:
        doc.update(verdict="needs_more_context")
    return doc


def _bad_values(schema: Mapping[str, Any], item: Any) -> Iterator[Any]:
    yield None
    yield {"nested": {"deeper": [1, {"x": None}]}}
    kind = schema.get("type")
    if "enum" in schema:
        yield from ("bogus", 7, "")
    if kind == "string":
        yield from (123, True, ["s"], "" if "minLength" in schema else 0)
        if "maxLength" in schema:
            yield "x" * (schema["maxLength"] + 1)
        if "pattern" in schema:
            yield "ZZ !\x1b[0m"
    if kind in ("integer", "number"):
        yield from ("12", "NaN", "Infinity", "-inf", True, [1])
        if kind == "integer":
            yield 1.5
        if "minimum" in schema:
            yield schema["minimum"] - (1 if kind == "integer" else 0.001)
        if "maximum" in schema:
            yield schema["maximum"] + (1 if kind == "integer" else 0.001)
    if kind == "boolean":
        yield from ("true", 1)
    if kind == "object":
        yield from ([], "object", {"unexpected": 1})
    if kind == "array":
        yield from ({}, "array", [])
        if "maxItems" in schema:
            yield [item] * (schema["maxItems"] + 1)


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    if delete:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return doc


def _paths(schema: Mapping[str, Any], doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...],
                                                                                            Mapping[str, Any], Any]]:
    """(path, subschema, current value) of every property in the schema that the doc has."""
    for name, sub in schema.get("properties", {}).items():
        if name == "schema_version" or not isinstance(doc, dict):
            continue
        current = doc.get(name)
        yield (*path, name), sub, current
        if sub.get("type") == "object" and isinstance(current, dict):
            yield from _paths(sub, current, (*path, name))
        if sub.get("type") == "array" and isinstance(current, list) and current:
            yield from _paths(sub["items"], current[0], (*path, name, 0))


def _doc(topic: str, fn: Callable[[dict[str, Any]], Any], contract: Mapping[str, TopicSpec]) -> Template:
    def make(sid: str) -> tuple[bytes | None, bytes | None]:
        return sid.encode(), orjson.dumps(fn(base_doc(contract[topic], sid)))
    return make


def templates(topic: str, contract: Mapping[str, TopicSpec], max_bytes: int) -> list[tuple[str, Template]]:
    spec = contract[topic]
    example = base_doc(spec, "h0")
    out: list[tuple[str, Template]] = []
    for path, sub, current in _paths(spec.schema, example):
        item = current[0] if isinstance(current, list) and current else None
        for bad in _bad_values(sub, item):
            out.append(("field:" + ".".join(map(str, path)), _doc(topic, lambda d, p=path, b=bad: _set(d, p, b),
                                                                  contract)))
        out.append(("missing:" + ".".join(map(str, path)), _doc(topic, lambda d, p=path: _set(d, p, None, True),
                                                                contract)))
    raw: list[tuple[str, Callable[[str], Any]]] = [
        ("malformed", lambda s: b"{"), ("malformed", lambda s: b"not json"), ("malformed", lambda s: b""),
        ("malformed", lambda s: b'{"schema_version": 1, "stream_id": "%s",' % s.encode()),
        ("malformed", lambda s: b"{'schema_version': 1}"), ("malformed", lambda s: b'{"a": NaN}'),
        ("malformed", lambda s: b'{"schema_version": 1} trailing'), ("null_value", lambda s: None),
        ("non_object", lambda s: b"[]"), ("non_object", lambda s: b"1"), ("non_object", lambda s: b'"str"'),
        ("non_object", lambda s: b"null"), ("non_object", lambda s: b"true"),
        ("non_object", lambda s: orjson.dumps([base_doc(spec, s)])),
        ("invalid_utf8", lambda s: b'{"schema_version": 1, "stream_id": "\xff\xfe%s"}' % s.encode()),
        ("invalid_utf8", lambda s: b'{"schema_version": 1, "stream_id": "\xc0\xaf\xed\xa0\x80"}'),
        ("invalid_utf8", lambda s: b"\xef\xbb\xbf" + orjson.dumps(base_doc(spec, s))),
        ("lone_surrogate", lambda s: orjson.dumps(base_doc(spec, s))[:-1] + b', "x": "\\ud800"}'),
        ("deep_nesting", lambda s: b'{"schema_version": 1, "stream_id": "%s", "x": ' % s.encode()
         + b"[" * 300 + b"]" * 300 + b"}"),
        ("deep_nesting", lambda s: b'{"schema_version": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("deep_nesting", lambda s: b'{"a":' * 3000 + b"1" + b"}" * 3000),
        ("oversized", lambda s: b'{"pad": "' + b"x" * max_bytes + b'"}'),
        ("dup_keys", lambda s: orjson.dumps(base_doc(spec, s))[:-1] + b', "schema_version": 2}'),
    ]
    out += [(f, lambda s, fn=fn: (s.encode(), fn(s))) for f, fn in raw]
    for version in (0, 2, "1", 1.0, True, None, 10**12, [1]):
        out.append(("version", _doc(topic, lambda d, v=version: {**d, "schema_version": v}, contract)))
    out.append(("version", _doc(topic, lambda d: {k: v for k, v in d.items() if k != "schema_version"}, contract)))
    out += [("key", lambda s: (None, orjson.dumps(base_doc(spec, s)))),
            ("key", lambda s: (b"other-" + s.encode(), orjson.dumps(base_doc(spec, s)))),
            ("key", lambda s: (b"\xff\xfe" + s.encode(), orjson.dumps(base_doc(spec, s)))),
            ("key", lambda s: (b"", orjson.dumps(base_doc(spec, s)))),
            ("key", lambda s: (s.encode() + b" ", orjson.dumps(base_doc(spec, s))))]
    times = {"ts_us": _now() * 1000, "ts_s": _now() // 1000, "ts_negative": -1, "ts_zero": 0,
             "huge_int": 10**30, "huge_i64": 2**63 - 1, "huge_u64": 2**64 - 1, "huge_u64p1": 2**64}
    for fam, ts in times.items():
        def stamp(d: dict[str, Any], ts: int = ts) -> dict[str, Any]:
            for frame in d.get("frames", []):
                frame.update(ts_ms=ts, seq=ts if ts >= 0 else 0)
            for field in ("ts_ms", "viewer_count", "account_age_days"):
                if field in d:
                    d[field] = ts
            return d
        out.append((fam, lambda s, fn=stamp: (s.encode(), json.dumps(fn(base_doc(spec, s))).encode())))
    for odd in ODD_IDS:  # control characters, bidi overrides, ANSI escapes as ids (+ "-x": 130 chars at most)
        for suffix in ("", "-x"):
            out.append(("odd_id", lambda s, sid=odd + suffix: (sid.encode(), orjson.dumps(base_doc(spec, sid)))))
        out.append(("odd_field", _doc(topic, lambda d, o=odd: {k: (o if k.endswith("_id") and k != "stream_id"
                                                                   else v) for k, v in d.items()}, contract)))
    return out


def _walk(doc: Any) -> Iterator[Any]:
    yield doc
    for child in doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else ():
        yield from _walk(child)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def oracle(spec: TopicSpec, key: bytes | None, value: bytes | None, max_bytes: int) -> str | None:
    """The dead-letter reason the contract gives this record (None: accepted), or EDGE."""
    if value is None:
        return "malformed_json"
    if len(value) > max_bytes:
        return "oversized"
    try:
        doc = json.loads(value.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "malformed_json"
    if any((isinstance(x, int) and not -(2**63) <= x < 2**64) or (isinstance(x, str) and any(
            "\ud800" <= c <= "\udfff" for c in x)) for x in _walk(doc)):
        return EDGE
    if not isinstance(doc, dict):
        return "not_an_object"
    version = doc.get("schema_version")
    if type(version) is not int or version not in spec.schema_versions:
        return "unknown_version"
    times = [doc.get("ts_ms")] + [f.get("ts_ms") for f in (doc.get("frames") or [])[:64] if isinstance(f, dict)] \
        if isinstance(doc.get("frames", []), list) else [doc.get("ts_ms")]
    if any(type(t) is int and not EARLIEST_MS <= t <= LATEST_MS for t in times):
        return "implausible_time"
    if not jsonschema.Draft7Validator(spec.schema).is_valid(doc):
        return "schema_violation"
    if key is None or key != doc["stream_id"].encode():
        return "key_mismatch"
    # a verdict is a control record: one the contract accepts is still refused unless a trusted key
    # signed it, and the drill's hostile verdicts are unsigned
    return "bad_signature" if spec.name == REVIEW_VERDICTS else None


def hostile_corpus(n: int, canaries: int, contract: Mapping[str, TopicSpec], max_bytes: int,
                   seed: int = 7) -> list[Record]:
    """``n`` hostile records over the five input topics (one ~0.99 MB record on each), with
    ``canaries`` known-hash streams mixed in (odd ones are preceded by a stream.started whose
    time is in microseconds: dead-lettered, and the block must still happen)."""
    rng = random.Random(seed)
    pool: list[tuple[str, str, Template, str | None]] = []
    for topic in INPUTS:
        for family, make in templates(topic, contract, max_bytes):
            key, value = make("h0")
            pool.append((topic, family, make, oracle(contract[topic], key, value, max_bytes)))
    rng.shuffle(pool)
    records = []
    for i in range(max(0, n - len(INPUTS))):
        topic, family, make, expect = pool[i % len(pool)]
        key, value = make(f"h{i}")
        records.append(Record(topic, key, value, family, expect))
    for k in range(canaries):
        sid = f"canary-{k}"
        at = rng.randrange(len(records) + 1)
        frame = {"seq": 1, "ts_ms": _now(), "md5": canary_md5(k)}
        records.insert(at, Record(FRAME_HASHES, sid.encode(), orjson.dumps(
            {"schema_version": 1, "stream_id": sid, "frames": [frame]}), "canary", None, k))
        if k % 2:
            meta = {**base_doc(contract[METADATA], sid), "ts_ms": _now() * 1000, "viewer_count": 2**63 - 1}
            value = orjson.dumps(meta)
            records.insert(at, Record(METADATA, sid.encode(), value, "canary_context",
                                      oracle(contract[METADATA], sid.encode(), value, max_bytes), k))
    for j, topic in enumerate(INPUTS):
        sid = f"big-{j}"
        value = orjson.dumps({**base_doc(contract[topic], sid), "pad": "x" * BIG})
        records.insert(len(records) * (j + 1) // (len(INPUTS) + 2),
                       Record(topic, sid.encode(), value, "big", "oversized"))
    return records


def oversize_control() -> list[tuple[str, bytes, bytes]]:
    """(contract topic, key, value): ~0.99 MB on the policy topic's ``live`` key and on the bank topic."""
    pad = "x" * BIG
    return [("streamsafe.policy", b"live", orjson.dumps({"schema_version": 1, "pad": pad})),
            ("hashbank.entries", b"drill:oversize", orjson.dumps(
                {"schema_version": 1, "bank": "known-csam", "signal_type": "md5", "hash": "0" * 32, "label": pad}))]


def compare(coords: Mapping[tuple[str, int, int], Record], dead: Mapping[tuple[str, int, int], str]) -> dict[str, Any]:
    """Dead letters (source coordinates -> reason) against the records sent and their oracle labels."""
    hostile = [r for r in coords.values() if r.canary < 0]
    expected = {c for c, r in coords.items() if r.expect not in (None, EDGE)}
    got = {c: reason for c, reason in dead.items() if c in coords}
    return {
        "hostile_sent": len(hostile), "expected_dead_letters": len(expected), "dead_lettered": len(got),
        "by_reason": dict(Counter(got.values())),
        "dead_lettered_over_hostile": round(len(got) / len(hostile), 4) if hostile else None,
        "missing_dead_letters": dict(Counter(coords[c].family.split(":")[0] for c in expected - set(got))),
        "missing_by_topic": dict(Counter(coords[c].topic for c in expected - set(got))),
        "wrong_reason": dict(Counter(f"{coords[c].family}: {coords[c].expect}->{reason}" for c, reason in got.items()
                                     if coords[c].expect not in (None, EDGE, reason))),
        "unexpected_dead_letters": dict(Counter(f"{coords[c].family}->{reason}" for c, reason in got.items()
                                                if coords[c].expect is None)),
    }
