"""RFC 9162 Merkle tree: roots, compact ranges and proofs against RFC vectors and a recursive reference."""

from __future__ import annotations

import hashlib

import pytest

from auditkeep.integrity import merkle


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- an independent reference, written straight from the recursive definitions of RFC 9162 §2.1 ---


def ref_mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf *data*."""
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), §2.1.3.1."""
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), §2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = _split(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_root_from_path(m: int, n: int, path: list[bytes], leaf: bytes) -> bytes:
    """Rebuild the root from an inclusion path by following PATH's recursion (consumes `path`)."""
    if n == 1:
        if path:
            raise ValueError("path too long")
        return leaf
    k = _split(n)
    sibling = path.pop()
    if m < k:
        return _h(b"\x01" + ref_root_from_path(m, k, path, leaf) + sibling)
    return _h(b"\x01" + sibling + ref_root_from_path(m - k, n - k, path, leaf))


def ref_roots_from_subproof(
    m: int, n: int, proof: list[bytes], b: bool, old_root: bytes
) -> tuple[bytes, bytes]:
    """Rebuild (old subtree root, new subtree root) by following SUBPROOF's recursion (consumes `proof`)."""
    if m == n:
        if b:
            return old_root, old_root
        node = proof.pop()
        return node, node
    k = _split(n)
    sibling = proof.pop()
    if m <= k:
        old, new = ref_roots_from_subproof(m, k, proof, b, old_root)
        return old, _h(b"\x01" + new + sibling)
    old, new = ref_roots_from_subproof(m - k, n - k, proof, False, old_root)
    return _h(b"\x01" + sibling + old), _h(b"\x01" + sibling + new)


def ref_verify_inclusion(m: int, n: int, path: list[bytes], leaf: bytes, root: bytes) -> bool:
    try:
        return ref_root_from_path(m, n, list(path), leaf) == root
    except (ValueError, IndexError):
        return False


def ref_verify_consistency(m: int, n: int, proof: list[bytes], old_root: bytes, new_root: bytes) -> bool:
    remaining = list(proof)
    try:
        old, new = ref_roots_from_subproof(m, n, remaining, True, old_root)
    except IndexError:
        return False
    return not remaining and old == old_root and new == new_root


def data(i: int) -> bytes:
    """Leaf data as auditkeep uses it: a 32-byte chain hash."""
    return _h(i.to_bytes(4, "big"))


LEAVES = [data(i) for i in range(40)]
LEAF_HASHES = [merkle.leaf_hash(d) for d in LEAVES]

# RFC 6962 test vectors (certificate-transparency's merkle_tree_test, reused by Trillian): leaf data
# and the root of the tree over the first n of them.
CT_LEAVES = [bytes.fromhex(x) for x in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}
CT_CONSISTENCY = {
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}
CT_LEAF_HASHES = [merkle.leaf_hash(d) for d in CT_LEAVES]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT == bytes.fromhex(CT_ROOTS[0])


@pytest.mark.parametrize("n", range(9))
def test_root_matches_rfc6962_vectors(n: int) -> None:
    assert merkle.root(CT_LEAF_HASHES[:n]).hex() == CT_ROOTS[n]
    assert ref_mth(CT_LEAVES[:n]).hex() == CT_ROOTS[n]


@pytest.mark.parametrize(("index", "size"), sorted(CT_PATHS))
def test_inclusion_proof_matches_rfc6962_vectors(index: int, size: int) -> None:
    proof = merkle.inclusion_proof(CT_LEAF_HASHES, index, size)
    assert [p.hex() for p in proof] == CT_PATHS[index, size]


@pytest.mark.parametrize(("first", "second"), sorted(CT_CONSISTENCY))
def test_consistency_proof_matches_rfc6962_vectors(first: int, second: int) -> None:
    proof = merkle.consistency_proof(CT_LEAF_HASHES, first, second)
    assert [p.hex() for p in proof] == CT_CONSISTENCY[first, second]


def test_root_matches_reference_for_every_size_up_to_40() -> None:
    for n in range(len(LEAVES) + 1):
        assert merkle.root(LEAF_HASHES[:n]) == ref_mth(LEAVES[:n]), n


def test_compact_range_root_equals_full_root_for_every_size_up_to_100() -> None:
    leaves = [merkle.leaf_hash(data(i)) for i in range(100)]
    tree = merkle.CompactRange()
    assert tree.root() == merkle.EMPTY_ROOT
    for n in range(1, 101):
        tree.append(leaves[n - 1])
        assert tree.size == n
        assert len(tree.hashes) == n.bit_count()
        assert tree.root() == merkle.root(leaves[:n]), n


def test_cover_is_the_perfect_subtrees_of_a_range_left_to_right() -> None:
    """Leaves 1..7 of a tree: [1], [2, 4), [4, 8); leaves 3..12: [3], [4, 8), [8, 12), [12]."""
    assert merkle.cover(1, 8) == [(0, 1), (1, 1), (2, 1)]
    assert merkle.cover(3, 13) == [(0, 3), (2, 1), (2, 2), (0, 12)]
    assert merkle.cover(0, 13) == [(3, 0), (2, 2), (0, 12)]  # a compact range's subtrees
    assert merkle.cover(5, 5) == []
    for begin in range(40):
        for end in range(begin + 1, 41):  # contiguous subtrees from begin to end
            spans = [(i << h, (i + 1) << h) for h, i in merkle.cover(begin, end)]
            assert [a for a, _ in spans] == [begin, *(b for _, b in spans[:-1])], (begin, end)
            assert spans[-1][1] == end


def test_spans_built_apart_join_into_the_full_tree() -> None:
    """Leaves begin..end-1 appended to a span in uneven batches, joined onto the compact range of the
    leaves before `begin`, give the root of every leaf; each cut gives the root at that tree size."""
    leaves = [merkle.leaf_hash(data(i)) for i in range(70)]
    for begin in (0, 1, 5, 8, 13, 32, 33):
        for batches in ((70,), (1, 2, 3, 64), (7, 7, 7, 7, 7, 7, 7, 7, 7, 7)):
            span = merkle.MerkleSpan(begin)
            cuts: dict[int, list[bytes]] = {}
            position = begin
            for size in batches:
                batch = leaves[position : min(position + size, 70)]
                cuts.update(span.extend(batch, cuts=range(begin, 71)))
                position += len(batch)
            assert (span.begin, span.end) == (begin, 70)
            tree = merkle.CompactRange()
            tree.extend(leaves[:begin])
            joined = tree.copy()
            joined.extend_span(70, span.hashes)
            assert joined.root() == merkle.root(leaves), (begin, batches)
            assert joined.hashes == merkle.CompactRange(70, joined.hashes).hashes
            assert sorted(cuts) == list(range(begin + 1, 71))
            for cut, hashes in cuts.items():
                at_cut = tree.copy()
                at_cut.extend_span(cut, hashes)
                assert at_cut.root() == merkle.root(leaves[:cut]), (begin, batches, cut)


def test_extend_span_refuses_hashes_that_cannot_cover_the_range() -> None:
    tree = merkle.CompactRange()
    tree.extend(LEAF_HASHES[:3])
    with pytest.raises(ValueError, match="covered by 2 hashes"):
        tree.extend_span(5, [LEAF_HASHES[3]])


def test_stored_leaves_after_a_purge_give_the_full_tree_s_proofs_and_roots() -> None:
    """With leaves 0..purged-1 replaced by their compact range: every inclusion proof of a stored leaf and
    every consistency proof from size 0 or >= purged equals the one over all leaves."""
    leaves = [merkle.leaf_hash(data(i)) for i in range(24)]
    for purged in range(25):
        prefix = merkle.CompactRange()
        prefix.extend(leaves[:purged])
        stored = merkle.StoredLeaves(prefix, leaves[purged:])
        assert stored.size == 24
        for size in [0, *range(max(purged, 1), 25)]:
            assert stored.root(size) == merkle.root(leaves[:size]), (purged, size)
            for index in range(purged, size):
                assert stored.inclusion_proof(index, size) == merkle.inclusion_proof(leaves, index, size)
            for first in [0, *range(max(purged, 1), size + 1)]:
                assert stored.consistency_proof(first, size) == merkle.consistency_proof(leaves, first, size), (
                    purged, first, size)


@pytest.mark.parametrize("purged", [0, 1000, 1537])
def test_stored_leaves_of_large_trees_share_subtrees_and_stay_exact(purged: int) -> None:
    """Past the size built directly (1,024 leaves) subtrees are split and remembered: proofs and roots
    computed one after another on the same leaves still equal those over all leaves."""
    leaves = [merkle.leaf_hash(data(i)) for i in range(3000)]
    prefix = merkle.CompactRange()
    prefix.extend(leaves[:purged])
    stored = merkle.StoredLeaves(prefix, leaves[purged:])
    for size in (2048, 2049, 3000):
        for index in (max(purged, 1500), 2047, size - 1):
            assert stored.inclusion_proof(index, size) == merkle.inclusion_proof(leaves, index, size)
        assert stored.root(size) == merkle.root(leaves[:size])
        for first in (0, max(purged, 1), 1600, 2048):
            assert stored.consistency_proof(first, size) == merkle.consistency_proof(leaves, first, size)
            assert stored.root(first) == merkle.root(leaves[:first])


def test_stored_leaves_refuse_what_needs_purged_leaves() -> None:
    leaves = [merkle.leaf_hash(data(i)) for i in range(16)]
    prefix = merkle.CompactRange()
    prefix.extend(leaves[:6])
    stored = merkle.StoredLeaves(prefix, leaves[6:])
    with pytest.raises(ValueError, match="need 6 <= index"):
        stored.inclusion_proof(5, 16)
    with pytest.raises(ValueError, match="need first 0 or 6 <= first"):
        stored.consistency_proof(3, 16)
    with pytest.raises(ValueError, match=r"need tree_size 0 or 6\.\.16"):
        stored.root(4)
    with pytest.raises(ValueError, match=r"leaves 0\.\.0 were purged"):
        stored.subtree_root(0, 2)


def test_compact_range_text_round_trips() -> None:
    tree = merkle.CompactRange()
    assert tree.to_text() == ""
    tree.extend(LEAF_HASHES[:13])  # 13 = 8 + 4 + 1: three subtrees, largest first
    text = tree.to_text()
    assert text.split(",") == [merkle.root(LEAF_HASHES[:8]).hex(), merkle.root(LEAF_HASHES[8:12]).hex(),
                               LEAF_HASHES[12].hex()]
    parsed = merkle.CompactRange.from_text(13, text)
    assert parsed.hashes == tree.hashes
    parsed.append(LEAF_HASHES[13])
    assert parsed.root() == merkle.root(LEAF_HASHES[:14])
    assert merkle.CompactRange.from_text(0, "").size == 0


def test_compact_range_copy_is_independent() -> None:
    tree = merkle.CompactRange()
    tree.extend(LEAF_HASHES[:3])
    copy = tree.copy()
    copy.append(LEAF_HASHES[3])
    assert (tree.size, copy.size) == (3, 4)
    assert tree.root() == merkle.root(LEAF_HASHES[:3])


@pytest.mark.parametrize(
    ("size", "text"),
    [(3, LEAF_HASHES[0].hex()), (1, ""), (2, "zz" * 32), (1, LEAF_HASHES[0].hex()[:-2]), (-1, "")],
)
def test_compact_range_rejects_text_that_cannot_be_that_size(size: int, text: str) -> None:
    with pytest.raises(ValueError):
        merkle.CompactRange.from_text(size, text)


def test_inclusion_proofs_for_every_leaf_of_every_tree_up_to_20() -> None:
    for n in range(1, 21):
        root = merkle.root(LEAF_HASHES[:n])
        for m in range(n):
            proof = merkle.inclusion_proof(LEAF_HASHES, m, n)
            assert proof == ref_path(m, LEAVES[:n]), (m, n)
            assert ref_verify_inclusion(m, n, proof, LEAF_HASHES[m], root), (m, n)
            assert merkle.verify_inclusion(LEAF_HASHES[m], m, n, proof, root), (m, n)


def test_consistency_proofs_for_every_pair_of_sizes_up_to_20() -> None:
    for n in range(0, 21):
        new_root = merkle.root(LEAF_HASHES[:n])
        for m in range(0, n + 1):
            old_root = merkle.root(LEAF_HASHES[:m])
            proof = merkle.consistency_proof(LEAF_HASHES, m, n)
            assert merkle.verify_consistency(m, n, proof, old_root, new_root), (m, n)
            if m > 0:
                assert proof == ref_subproof(m, LEAVES[:n], True), (m, n)
                assert ref_verify_consistency(m, n, proof, old_root, new_root), (m, n)
            else:
                assert proof == []


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def test_tampered_inclusion_proofs_are_rejected() -> None:
    for n in range(1, 21):
        root = merkle.root(LEAF_HASHES[:n])
        for m in range(n):
            proof = merkle.inclusion_proof(LEAF_HASHES, m, n)
            leaf = LEAF_HASHES[m]
            assert not merkle.verify_inclusion(_flip(leaf), m, n, proof, root)
            assert not merkle.verify_inclusion(leaf, m, n, proof, _flip(root))
            for j in range(len(proof)):
                bad = [*proof[:j], _flip(proof[j]), *proof[j + 1 :]]
                assert not merkle.verify_inclusion(leaf, m, n, bad, root), (m, n, j)
            assert not merkle.verify_inclusion(leaf, m, n, [*proof, root], root)
            if proof:
                assert not merkle.verify_inclusion(leaf, m, n, proof[:-1], root)
            for other in (m - 1, m + 1):
                if 0 <= other < n and LEAF_HASHES[other] != leaf:
                    assert not merkle.verify_inclusion(leaf, other, n, proof, root), (m, other, n)
            assert not merkle.verify_inclusion(leaf, n, n, proof, root)


def test_tampered_consistency_proofs_are_rejected() -> None:
    for n in range(2, 21):
        new_root = merkle.root(LEAF_HASHES[:n])
        for m in range(1, n):
            old_root = merkle.root(LEAF_HASHES[:m])
            proof = merkle.consistency_proof(LEAF_HASHES, m, n)
            assert not merkle.verify_consistency(m, n, proof, _flip(old_root), new_root), (m, n)
            assert not merkle.verify_consistency(m, n, proof, old_root, _flip(new_root)), (m, n)
            assert not merkle.verify_consistency(m, n, [], old_root, new_root)
            for j in range(len(proof)):
                bad = [*proof[:j], _flip(proof[j]), *proof[j + 1 :]]
                assert not merkle.verify_consistency(m, n, bad, old_root, new_root), (m, n, j)
            assert not merkle.verify_consistency(m, n, [*proof, new_root], old_root, new_root), (m, n)
            # A rewritten old leaf is not an extension.
            rewritten = [_flip(LEAF_HASHES[0]), *LEAF_HASHES[1:n]]
            assert not merkle.verify_consistency(
                m, n, merkle.consistency_proof(rewritten, m, n), old_root, merkle.root(rewritten)
            ), (m, n)


def test_consistency_edge_cases() -> None:
    root5 = merkle.root(LEAF_HASHES[:5])
    assert merkle.verify_consistency(5, 5, [], root5, root5)
    assert not merkle.verify_consistency(5, 5, [], root5, _flip(root5))
    assert not merkle.verify_consistency(5, 5, [root5], root5, root5)
    assert merkle.verify_consistency(0, 5, [], merkle.EMPTY_ROOT, root5)
    assert not merkle.verify_consistency(0, 5, [], root5, root5)
    assert not merkle.verify_consistency(6, 5, [], root5, root5)


@pytest.mark.parametrize(("index", "size"), [(-1, 3), (3, 3), (0, 0), (0, 41)])
def test_inclusion_proof_rejects_indexes_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(LEAF_HASHES, index, size)


@pytest.mark.parametrize(("first", "second"), [(-1, 3), (4, 3), (0, 41)])
def test_consistency_proof_rejects_impossible_sizes(first: int, second: int) -> None:
    with pytest.raises(ValueError):
        merkle.consistency_proof(LEAF_HASHES, first, second)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = data(1), data(2)
    assert merkle.leaf_hash(a) == _h(b"\x00" + a)
    assert merkle.node_hash(a, b) == _h(b"\x01" + a + b)
    assert merkle.leaf_hash(a + b) != merkle.node_hash(a, b)
