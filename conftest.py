"""Shared fixtures: the node and app factories come from ``cocaine_core.testing`` (which also
gives the run a key folder of its own); every test is checked for slave processes left behind."""

import pytest

pytest_plugins = ["cocaine_core.testing", "cocaine_core.testing_netns"]


@pytest.fixture(autouse=True)
def _no_slave_left_behind():
    """Fail a test that leaves a template or slave process of this test run alive."""
    from cocaine_core.testing import leftover_slaves, wait_until

    yield
    wait_until(lambda: not leftover_slaves(), timeout=10,
               message="every template and slave process to exit")
