"""The topics/ contract is complete, consistent, and its examples are valid."""

import jsonschema
import pytest

from streamsafe.events.contract import INPUT_TOPICS, REQUIRED_TOPICS, load_contract

CONTRACT = load_contract()


def test_every_required_topic_is_defined():
    assert set(REQUIRED_TOPICS) <= set(CONTRACT)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_example_validates_against_its_schema(name):
    spec = CONTRACT[name]
    jsonschema.Draft7Validator.check_schema(spec.schema)
    jsonschema.validate(spec.example, spec.schema, cls=jsonschema.Draft7Validator)
    assert spec.example["schema_version"] in spec.schema_versions


@pytest.mark.parametrize(("name", "i"), [(n, i) for n in sorted(CONTRACT) for i in range(len(CONTRACT[n].examples))])
def test_further_examples_validate_against_their_schema(name, i):
    spec = CONTRACT[name]
    jsonschema.validate(spec.examples[i], spec.schema, cls=jsonschema.Draft7Validator)
    assert spec.examples[i]["schema_version"] in spec.schema_versions


def test_every_schema_version_has_an_example():
    for spec in CONTRACT.values():
        shown = {e["schema_version"] for e in (spec.example, *spec.examples)}
        assert shown == set(spec.schema_versions), spec.name


def test_inputs_and_outputs_keyed_by_stream_are_co_partitioned():
    counts = {CONTRACT[n].partitions for n in CONTRACT if CONTRACT[n].key == "stream_id"}
    assert len(counts) == 1
    assert all(CONTRACT[n].key == "stream_id" for n in INPUT_TOPICS)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_every_timestamp_field_is_epoch_milliseconds(name):
    def walk(schema, path):
        for prop, sub in schema.get("properties", {}).items():
            if prop.endswith("_ms"):
                assert "integer" in (sub["type"] if isinstance(sub["type"], list) else [sub["type"]]), (
                    f"{path}.{prop}"
                )
            walk(sub, f"{path}.{prop}")
        if "items" in schema:
            walk(schema["items"], path + "[]")

    walk(CONTRACT[name].schema, name)
