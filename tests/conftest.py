"""Shared test configuration: markers and skips for tests that need root or real clients."""

from __future__ import annotations

import os
import shutil

import pytest

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/tests/integration/" in path and "root" not in item.keywords:
            item.add_marker(pytest.mark.root)
        if "/tests/compat/" in path and "compat" not in item.keywords:
            item.add_marker(pytest.mark.compat)
        if "root" in item.keywords and not IS_ROOT:
            item.add_marker(pytest.mark.skip(reason="needs root and a real kernel"))


def require_binary(name: str) -> str:
    """The path of a required third-party binary; fails (not skips) under CI when it is missing."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/debian-packages.txt should bring it")
        pytest.skip(f"{name} is not installed")
    return path
