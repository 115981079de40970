"""Alert rules (issue #13; docs/alerts.md): each rule counts one organization's matching events in seq
order and fires when `count` of them fall within `window_seconds`, recording `alert.fired` and notifying.

- `service.py`: what admins do (create, change, delete, test; each a self-audit event), and templates.
- `windows.py`: the counting itself, pure: a window per group, cooldown.
- `evaluator.py`: the loop run by `auditkeep serve` and `auditkeep alerts watch`, one node a rule at a time.
- `notify.py`: the outbox of firings: the `alert.fired` record, then webhook, Slack and email, retried.
"""
