"""Configuration: YAML into frozen dataclasses; every error names its path.

``loader`` reads the document, ``routes`` and ``validate`` check it piece by
piece, ``types`` holds the records. May import the pure domain modules only.
"""

from __future__ import annotations

from relay.config.admin import parse_listen
from relay.config.loader import from_mapping, load
from relay.config.types import (
    DEFAULT_METHODS,
    SCHEMES,
    AckConfig,
    AdminConfig,
    AdminToken,
    BreakerConfig,
    Config,
    Dedupe,
    Encryption,
    HybridConfig,
    Limits,
    Listen,
    ListenerTLS,
    LogConfig,
    Mode,
    Network,
    NotifyTarget,
    OrderingConfig,
    RateLimit,
    Route,
    StaleConfig,
    StorageConfig,
    SyncConfig,
    Timeouts,
    TracingConfig,
    Upstream,
    UpstreamTLS,
    VerifyConfig,
)

__all__ = [
    "DEFAULT_METHODS",
    "SCHEMES",
    "AckConfig",
    "AdminConfig",
    "AdminToken",
    "BreakerConfig",
    "Config",
    "Dedupe",
    "Encryption",
    "HybridConfig",
    "Limits",
    "Listen",
    "ListenerTLS",
    "LogConfig",
    "Mode",
    "Network",
    "NotifyTarget",
    "OrderingConfig",
    "RateLimit",
    "Route",
    "StaleConfig",
    "StorageConfig",
    "SyncConfig",
    "Timeouts",
    "TracingConfig",
    "Upstream",
    "UpstreamTLS",
    "VerifyConfig",
    "from_mapping",
    "load",
    "parse_listen",
]
