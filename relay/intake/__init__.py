"""Intake: everything that happens while the sender waits.

The listener matches a route, checks the request and keys it; a mode (queue,
sync, hybrid) stores or forwards it and answers. Intake reaches delivery only
through ``relay.runtime.Outbound``.
"""
