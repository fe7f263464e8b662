"""webhook-relay: a reverse proxy that forwards each webhook to its backend once."""

__version__ = "0.1.0"
