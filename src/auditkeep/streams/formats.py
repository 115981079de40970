"""What a stream's records look like (issue #10).

- `datafold`: the GET's log object with `include=integrity` (the 17 fields plus seq, prev_hash, hash,
  personal_salt and personal_commitment),
  exactly as the database builds it for an export, so a receiver's copy verifies with
  `auditkeep verify-export`.
- `ocsf`: one OCSF 1.3.0 event per log (streams/ocsf.py), the same bytes `GET ... format=ocsf` serves.
"""

from __future__ import annotations

FORMATS = ("datafold", "ocsf")


def convert(format_: str, records: list[str], org_name: str) -> list[str]:
    """`records` (datafold JSON texts) in `format_`."""
    if format_ == "datafold":
        return records
    if format_ == "ocsf":
        from auditkeep.streams import ocsf

        return ocsf.convert(records, org_name)
    raise ValueError(f"unknown stream format {format_!r}")
