"""Sign-in throttling: how repeated failures slow down and then lock an account or a client address.

Pure functions over a counter's state; storage/sessions.py keeps the counters. Two counters guard each
attempt: one per account (the lower-cased email, whether or not it exists, so that a lock says nothing
about which emails are real) and one per client IP (an attacker trying many emails).

Policy (issue #5: "slowed down and then locked for a while"):
- account: 5 failures free; after that each attempt must wait 1, 2, 4, 8, 16 s after the last failure;
  the 10th failure locks the account for 15 minutes;
- client IP: 20 failures free (offices share addresses), then the same doubling waits (capped at 30 s);
  the 100th failure locks the address for 15 minutes;
- a counter forgets its failures 15 minutes after the last one, and starts afresh when a lock ends;
- a successful sign-in clears the account's counter but not the address's, so that an attacker who
  owns one account cannot use it to reset the count of guesses made from their address.
While a wait or lock is in force, attempts are refused before the password is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """When failures start to cost waiting, and when they lock."""

    free_failures: int
    lock_after: int
    lock_for: timedelta = timedelta(minutes=15)
    forget_after: timedelta = timedelta(minutes=15)
    first_wait: timedelta = timedelta(seconds=1)
    max_wait: timedelta = timedelta(seconds=30)

    def wait_after(self, failures: int) -> timedelta:
        """How long after the last of `failures` failures the next attempt must wait."""
        if failures < self.free_failures:
            return timedelta(0)
        wait: timedelta = self.first_wait * 2 ** min(failures - self.free_failures, 20)
        return min(wait, self.max_wait)


ACCOUNT_POLICY = ThrottlePolicy(free_failures=5, lock_after=10)
IP_POLICY = ThrottlePolicy(free_failures=20, lock_after=100)


@dataclass(frozen=True, slots=True)
class Counter:
    """A throttle counter as stored."""

    failures: int = 0
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """An attempt refused without checking the password."""

    locked: bool  # True: locked for a while; False: asked to wait a little
    retry_after: timedelta


def current(counter: Counter, policy: ThrottlePolicy, now: datetime) -> Counter:
    """The counter with expired state forgotten (a lock that ended, failures long past)."""
    if counter.locked_until is not None:
        return counter if counter.locked_until > now else Counter()
    if counter.last_failure_at is None or counter.last_failure_at + policy.forget_after <= now:
        return Counter()
    return counter


def check(counter: Counter, policy: ThrottlePolicy, now: datetime) -> Refusal | None:
    """A Refusal if an attempt now must not be tried, else None."""
    counter = current(counter, policy, now)
    if counter.locked_until is not None:
        return Refusal(locked=True, retry_after=counter.locked_until - now)
    if counter.last_failure_at is not None:
        allowed_at = counter.last_failure_at + policy.wait_after(counter.failures)
        if allowed_at > now:
            return Refusal(locked=False, retry_after=allowed_at - now)
    return None


def after_failure(counter: Counter, policy: ThrottlePolicy, now: datetime) -> Counter:
    """The counter after one more failure at `now` (locked when it reaches policy.lock_after)."""
    failures = current(counter, policy, now).failures + 1
    locked_until = now + policy.lock_for if failures >= policy.lock_after else None
    return Counter(failures, now, locked_until)
