"""Shared fixtures: the node and app factories come from ``cocaine_core.testing``."""

pytest_plugins = ["cocaine_core.testing"]
