"""`/api/v1/integrity/*`: public key, signed checkpoints, Merkle proofs and a server-side check (issue #3).

Every route needs admin or `audit_logs:read`. docs/integrity.md §9 documents the parameters and answers.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize, origin_of
from auditkeep.api.timerange import QueryDateTime
from auditkeep.auth.principals import Scope
from auditkeep.ingest import checkpointing, proofs, verification
from auditkeep.integrity.checkpoints import PUBLIC_KEY_MEDIA_TYPE

router = APIRouter(prefix="/api/v1/integrity", tags=["Integrity"])

Size = Annotated[int | None, Query(ge=0, le=2**63 - 1)]


@router.get("/public_key", summary="Public key of the checkpoint signing key",
            responses={200: {"content": {PUBLIC_KEY_MEDIA_TYPE: {}}}})
async def get_public_key(request: Request, principal: CurrentPrincipal, storage: StorageDep) -> Response:
    """The Ed25519 public key document (with any retired keys); `verify-export --public-key` takes it as saved."""
    await authorize(request, storage, principal, Scope.READ)
    document = await run_in_threadpool(checkpointing.public_key_document, storage)
    return Response(document, media_type=PUBLIC_KEY_MEDIA_TYPE)


@router.get("/checkpoints", summary="Signed checkpoints")
async def get_checkpoints(
    *,
    request: Request,
    principal: CurrentPrincipal,
    storage: StorageDep,
    min_tree_size: Size = None,
    max_tree_size: Size = None,
    start_date: Annotated[QueryDateTime | None, Query(description="Issued at or after (naive = UTC)")] = None,
    end_date: Annotated[QueryDateTime | None, Query(description="Issued before (naive = UTC)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """`{"checkpoints": [...]}`: the latest alone without a range, else those in range by tree size."""
    await authorize(request, storage, principal, Scope.READ)
    found = await run_in_threadpool(
        lambda: checkpointing.list_checkpoints(
            storage, principal.org_id, min_size=min_tree_size, max_size=max_tree_size, issued_from=start_date,
            issued_before=end_date, limit=limit,
        )
    )
    return {"checkpoints": [c.model_dump() for c in found]}


@router.post("/checkpoints", status_code=201, summary="Make a signed checkpoint now")
async def post_checkpoint(request: Request, principal: CurrentPrincipal, storage: StorageDep) -> JSONResponse:
    """Sign a checkpoint at the current head and return it (save it somewhere the server cannot reach)."""
    await authorize(request, storage, principal, Scope.READ)
    checkpoint = await run_in_threadpool(
        lambda: checkpointing.make_checkpoint(storage, principal.org_id, origin_of(request), actor=principal)
    )
    return JSONResponse(checkpoint.model_dump(), status_code=201)


@router.get("/proofs/inclusion", summary="Merkle inclusion proof of an event")
async def get_inclusion_proof(
    *,
    request: Request,
    principal: CurrentPrincipal,
    storage: StorageDep,
    # A UUID, as every stored event_uuid is: anything else is a 422 before the database sees it (a NUL byte
    # made PostgreSQL refuse the query, a 500: issue #11, found by tests/api/test_schemathesis.py).
    event_uuid: Annotated[UUID, Query()],
    tree_size: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Default: latest checkpoint")] = None,
) -> dict[str, Any]:
    """RFC 9162 audit path of the event in the tree of `tree_size` events."""
    await authorize(request, storage, principal, Scope.READ)
    # Read on a replica holding every write so far, the caller's included (storage/replicas.py, issue #14).
    return await run_in_threadpool(lambda: proofs.inclusion(storage, principal.org_id, str(event_uuid), tree_size,
                                                            reader=storage.for_read()))


@router.get("/proofs/consistency", summary="Merkle consistency proof between two tree sizes")
async def get_consistency_proof(
    *,
    request: Request,
    principal: CurrentPrincipal,
    storage: StorageDep,
    first: Annotated[int, Query(ge=0, le=2**63 - 1)],
    second: Annotated[int, Query(ge=0, le=2**63 - 1)],
) -> dict[str, Any]:
    """RFC 9162 proof that the tree of `second` events extends the tree of `first`."""
    await authorize(request, storage, principal, Scope.READ)
    return await run_in_threadpool(lambda: proofs.consistency(storage, principal.org_id, first, second,
                                                              reader=storage.for_read()))


@router.get("/verify", summary="Verify the organization's stored log")
async def get_verify(request: Request, principal: CurrentPrincipal, storage: StorageDep) -> dict[str, Any]:
    """`{"ok": true, ...}` or `{"ok": false, "broken": {"seq", "kind", "reason"}, ...}`; self-audited."""
    await authorize(request, storage, principal, Scope.READ)
    result = await run_in_threadpool(
        lambda: verification.verify_org(storage, principal.org_id, origin=origin_of(request), actor=principal)
    )
    return result.as_dict()
