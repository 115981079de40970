"""Integrity: canonical form, hash chain, Merkle tree and checkpoints. Pure functions, no I/O."""
