"""A real part a test needs (Docker, Chromium, Redis, Caddy, Node, ../shared, the compiled loops) is
missing: the test skips with the reason on a developer's machine, and fails under CI (`CI=true`),
where `.ci/run` provides every part, so a broken install step cannot hide as a row of skips."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing_part(reason: str, *, whole_module: bool = False) -> NoReturn:
    """Skip (or, under CI, fail) the calling test; `whole_module` when called at a module's top."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true: CI provides this part, so its absence fails the run)", pytrace=False)
    pytest.skip(reason, allow_module_level=whole_module)
