"""Delivery: everything after the ack.

The dispatcher's loops lease due deliveries, one attempt forwards one of them
and records its outcome, its report feeds metrics and logs, and the upstream
guard (breaker, rate limit, pause) decides what may go now. Intake reaches it
only through ``relay.runtime.Outbound``, which ``outbound.LocalDelivery`` implements.
"""
