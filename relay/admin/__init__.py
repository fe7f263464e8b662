"""The admin listener: probes, ``/metrics`` and the inspection API.

``app`` assembles it (middlewares, probes, metrics), ``api`` holds the
handlers, ``views`` the pure request parsing and JSON shaping. May import the
runtime, the store contract, config and housekeeping; never a process role.
"""

from __future__ import annotations

from relay.admin.app import build_admin_app
from relay.admin.control import STORE

__all__ = ["STORE", "build_admin_app"]
