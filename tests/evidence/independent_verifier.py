"""A second reader of evidence bundles, written from docs/integrity.md alone (§1-§5, §12).

It imports nothing from auditkeep: only the standard library and `cryptography` (for Ed25519). It
re-derives the canonical bytes (its own RFC 8785 serializer), the chain hashes, the Merkle leaves, the range
root and the RFC 9162 proof checks, so a bundle that both readers accept is proven by two implementations.
Returns the failures it finds (empty: the bundle holds).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import zipfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

FIELDS = ("action", "client_ip", "event_uuid", "is_support_user", "log_entry", "object_id", "object_type",
          "payload", "referer", "request_type", "source", "status", "timestamp", "url", "user_agent",
          "user_email", "user_id")
ZERO = bytes(32)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- RFC 8785 (JCS) --------------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _number(value: float) -> str:
    """ECMAScript Number.prototype.toString of a double."""
    if value == 0:
        return "0"
    if not math.isfinite(value):
        raise ValueError("not a JSON number")
    if float(value).is_integer() and abs(value) < 1e21:
        return str(int(value))
    digits_exp = repr(float(value))  # shortest round-trip digits
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = digits_exp.lstrip("-").partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    point = len(whole) + (int(exp_text) if exp_text else 0)  # decimal point position relative to digits start
    if whole == "0" or not whole.strip("0"):
        lead = len(frac) - len(frac.lstrip("0"))
        point = -lead + (int(exp_text) if exp_text else 0)
    digits = digits.rstrip("0") or "0"
    k, n = len(digits), point
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exp = n - 1
    body = digits[0] + ("." + digits[1:] if k > 1 else "")
    return sign + body + "e" + ("+" if exp > 0 else "-") + str(abs(exp))


def jcs(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > 2**53 - 1:
            raise ValueError("integer beyond 2**53 - 1")
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_string(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


PERSONAL = ("client_ip", "log_entry", "payload", "referer", "url", "user_agent", "user_email", "user_id")


def canonical(event: dict[str, Any]) -> bytes:
    """Version 1: the 17 fields plus seq. Version 2 (an event carrying `personal_salt` or
    `personal_commitment`): the personal fields replaced by `personal`, SHA-256(salt ‖ JCS of them), and `v`: 2."""
    body = {name: event[name] for name in FIELDS}
    salt, commitment = event.get("personal_salt"), event.get("personal_commitment")
    if salt is not None or commitment is not None:
        if commitment is None:
            commitment = sha(bytes.fromhex(salt) + jcs({k: event[k] for k in PERSONAL}).encode()).hex()
        body = {k: v for k, v in body.items() if k not in PERSONAL} | {"personal": commitment, "v": 2}
    body["seq"] = event["seq"]
    return jcs(body).encode()


# --- RFC 9162 --------------------------------------------------------------------------------------------

def leaf(chain_hash: bytes) -> bytes:
    return sha(b"\x00" + chain_hash)


def node(left: bytes, right: bytes) -> bytes:
    return sha(b"\x01" + left + right)


def aligned_cover(begin: int, end: int) -> list[tuple[int, int]]:
    """The maximal aligned perfect subtrees covering leaves [begin, end), left to right, as (start, end)."""
    spans = []
    while begin < end:
        size = 1
        while begin % (size * 2) == 0 and begin + size * 2 <= end:
            size *= 2
        spans.append((begin, begin + size))
        begin += size
    return spans


def tree_root(nodes: dict[tuple[int, int], bytes], start: int, end: int) -> bytes:
    if (start, end) in nodes:
        return nodes[(start, end)]
    if end - start <= 1:
        raise ValueError(f"no hash for leaf {start}")
    k = 1
    while k * 2 < end - start:
        k *= 2
    return node(tree_root(nodes, start, start + k), tree_root(nodes, start + k, end))


def inclusion_ok(leaf_hash: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_ok(first: int, second: int, proof: list[bytes], first_root: bytes, second_root: bytes) -> bool:
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    if not proof:
        return False
    if first & (first - 1) == 0:
        proof = [first_root, *proof]
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


# --- The bundle ------------------------------------------------------------------------------------------

def _keys(document: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    keys = {}
    for entry in [document, *document.get("retired", [])]:
        key = load_pem_public_key(entry["public_key_pem"].encode())
        assert isinstance(key, Ed25519PublicKey)
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        if sha(raw).hex() == entry["key_id"]:
            keys[entry["key_id"]] = key
    return keys


def _signed(cp: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> bool:
    key = keys.get(cp["key_id"])
    if key is None:
        return False
    body = {k: cp[k] for k in ("chain_head", "issued_at", "key_id", "org", "root_hash", "tree_size")}
    try:
        key.verify(bytes.fromhex(cp["signature"]), b"auditkeep checkpoint v1\n" + jcs(body).encode())
    except InvalidSignature:
        return False
    return True


def verify(path: Path) -> list[str]:
    """Every failure found in the bundle at `path`, as short tags with details ("changed: seq 5")."""
    failures: list[str] = []
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        for name, digest in manifest["files"].items():
            if name not in zf.namelist():
                failures.append(f"file missing: {name}")
            elif hashlib.sha256(zf.read(name)).hexdigest() != digest:
                failures.append(f"sha256 mismatch: {name}")
        keys = _keys(json.loads(zf.read("public_key.json")))
        checkpoints = json.loads(zf.read("checkpoints.json"))
        proofs = json.loads(zf.read("proofs.json"))
        lines = [json.loads(line) for line in zf.read("events.ndjson").decode().splitlines() if line.strip()]
    for name in ("before", "after"):
        cp = checkpoints[name]
        if cp is not None and (not _signed(cp, keys) or cp["org"] != manifest["organization"]):
            failures.append(f"bad signature: {name} checkpoint")
    after = checkpoints["after"]
    before = checkpoints["before"]
    statement, events = lines[0], lines[1:]
    if statement != {"query": manifest["query"]}:
        failures.append("statement differs from the manifest")
    hashes: dict[int, tuple[bytes, bytes]] = {}
    previous = None
    for event in events:
        seq = event["seq"]
        prev_hash, digest = bytes.fromhex(event["prev_hash"]), bytes.fromhex(event["hash"])
        if sha(prev_hash + canonical(event)) != digest:
            failures.append(f"changed: seq {seq}")
        key = (event["timestamp"], seq)
        if previous is not None and key <= previous:
            failures.append(f"reordered: seq {seq}")
        previous = key
        if seq in hashes:
            failures.append(f"added: seq {seq} twice")
        hashes[seq] = (prev_hash, digest)
    seqs = sorted(hashes)
    for a, b in itertools.pairwise(seqs):
        if b == a + 1 and hashes[b][0] != hashes[a][1]:
            failures.append(f"broken link: seq {b}")
        elif b != a + 1 and not manifest["query"]["filtered"]:
            failures.append(f"gap: seq {a + 1}..{b - 1}")
    if seqs and seqs[0] == 1 and hashes[1][0] != ZERO:
        failures.append("broken link: seq 1")
    if len(events) != manifest["counts"]["events"] or (seqs[0] if seqs else None) != manifest["first_seq"] or (
            seqs[-1] if seqs else None) != manifest["last_seq"]:
        failures.append("counts differ from the manifest")
    size = after["tree_size"]
    root = bytes.fromhex(after["root_hash"])
    if any(s > size for s in seqs):
        failures.append("added: an event beyond the after checkpoint")
    span = proofs["range"]
    if span is not None:
        first, last = span["first_seq"], span["last_seq"]
        if seqs != list(range(first, last + 1)):
            failures.append("bad range proof: events are not its range (added or missing)")
        else:
            nodes = {}
            for (s, e), h in zip(aligned_cover(0, first - 1), span["left"], strict=True):
                nodes[(s, e)] = bytes.fromhex(h)
            for (s, e), h in zip(aligned_cover(last, size), span["right"], strict=True):
                nodes[(s, e)] = bytes.fromhex(h)
            for s in seqs:
                nodes[(s - 1, s)] = leaf(hashes[s][1])
            try:
                if tree_root(nodes, 0, size) != root:
                    failures.append("bad range proof: root differs")
            except ValueError as exc:
                failures.append(f"bad range proof: {exc}")
    else:
        given = {p["seq"]: [bytes.fromhex(h) for h in p["audit_path"]] for p in proofs["inclusion"]}
        if set(given) != set(seqs):
            failures.append("bad inclusion proofs: not one per event (added or missing)")
        for s in seqs:
            if s in given and not inclusion_ok(leaf(hashes[s][1]), s - 1, size, given[s], root):
                failures.append(f"bad inclusion proof: seq {s}")
    c = proofs["consistency"]
    first_size = before["tree_size"] if before else 0
    first_root = bytes.fromhex(before["root_hash"]) if before else sha(b"")
    if (c["first"], c["second"]) != (first_size, size) or not consistency_ok(
            first_size, size, [bytes.fromhex(h) for h in c["proof"]], first_root, root):
        failures.append("bad consistency proof")
    return failures
