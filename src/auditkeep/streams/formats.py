"""What a stream's records look like (issue #10).

- `datafold`: the GET's log object with `include=integrity` (the 17 fields plus seq, prev_hash and hash),
  exactly as the database builds it for an export, so a receiver's copy verifies with
  `auditkeep verify-export`.
"""

from __future__ import annotations

FORMATS = ("datafold",)


def convert(format_: str, records: list[str], org_name: str) -> list[str]:
    """`records` (datafold JSON texts) in `format_`."""
    if format_ == "datafold":
        return records
    raise ValueError(f"unknown stream format {format_!r}")
