"""Evidence bundles (issue #12): one zip holding a range of an organization's events, the signed checkpoints
around it, the proofs that tie them together, the public key, a README and a human report, which an auditor
checks offline (`auditkeep verify-bundle`). making.py writes them, checking.py verifies them; the format is
docs/integrity.md §12.
"""
