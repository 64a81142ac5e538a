import copy

import orjson
import pytest

from streamsafe.events.contract import load_contract


@pytest.fixture(scope="session")
def contract():
    return load_contract()


@pytest.fixture
def example(contract):
    def make(topic, **changes):
        value = copy.deepcopy(dict(contract[topic].example))
        value.update(changes)
        return value

    return make


def encode(value) -> bytes:
    return orjson.dumps(value)
