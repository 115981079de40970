"""Streams (issue #10): each a durable cursor over one organization's seq order, delivered at least once
and in order to a destination (a webhook today; see docs/streams.md), by one forwarder at a time.

- `service.py`: what operators do (create, change, replay, delete; each a self-audit event).
- `forwarder.py`: the delivery loop, run by `auditkeep serve` and `auditkeep forward`.
- `sinks/`: one module per kind of destination.
- `secrets.py`: destination secrets sealed at rest.
"""
