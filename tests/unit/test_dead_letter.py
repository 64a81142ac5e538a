"""Dead letters are always sendable: bounded size, with the original's size and digest."""

import base64
import hashlib

import fastjsonschema
import orjson

from streamsafe.events.dead_letter import MAX_ORIGINAL_BYTES, DeadLetter, SourceRecord

SOURCE = SourceRecord("livestream.frame-hashes", 3, 881, 1764324061000)


def test_an_oversized_original_keeps_a_prefix_its_size_and_digest(contract):
    value = b"x" * 1_040_000  # ~0.99 MB, what put a worker in a crash loop
    encoded = DeadLetter("oversized", "too big", SOURCE, b"k" * 5000, value).encode(now_ms=1)
    assert len(encoded) < 200_000  # far below the producer's and broker's 1 MB
    record = orjson.loads(encoded)
    fastjsonschema.compile(dict(contract["streamsafe.dead-letter"].schema))(record)
    assert record["original_size"] == len(value) and record["original_truncated"] is True
    assert record["original_sha256"] == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(record["original_value_b64"]) == value[:MAX_ORIGINAL_BYTES]
    assert len(base64.b64decode(record["original_key_b64"])) == 1024


def test_a_small_original_is_kept_whole_and_can_be_dropped():
    dead = DeadLetter("malformed_json", "d" * 5000, SOURCE, b"st-1", b"{oops")
    record = orjson.loads(dead.encode(now_ms=1))
    assert base64.b64decode(record["original_value_b64"]) == b"{oops" and record["original_truncated"] is False
    assert len(record["detail"]) <= 1001
    bare = orjson.loads(dead.encode(now_ms=1, keep_bytes=0))
    assert bare["original_value_b64"] == "" and bare["original_sha256"] == record["original_sha256"]
