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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item (test_console.py screenshots failures)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
