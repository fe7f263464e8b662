"""The browser tests drive the daemon as the end-to-end tests do: their fixtures."""

from tests.e2e.conftest import pytest_runtest_makereport, relays, start_backend

__all__ = ["pytest_runtest_makereport", "relays", "start_backend"]
