import json
import os
import urllib.request

import pytest


@pytest.fixture(scope="session")
def base():
    return os.environ["TG_BASE"]


@pytest.fixture(scope="session")
def key():
    return os.environ["TG_KEY"]


@pytest.fixture
def mock_log():
    """Returns a function that reads the mock upstream's request log."""
    mock = os.environ["TG_MOCK"]

    def read():
        with urllib.request.urlopen(f"{mock}/__mock/requests") as r:
            return json.load(r)

    return read
