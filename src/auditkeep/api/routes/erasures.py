"""`POST /api/v1/erasures` (admins, issue #12): erase one person's personal fields; the same as `auditkeep erase`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from auditkeep.api.deps import CurrentPrincipal, StorageDep, authorize_admin, origin_of
from auditkeep.erasure import erase_person
from auditkeep.schemas.erasures import ErasureCreate, ErasurePublic

router = APIRouter(tags=["Erasure"])


@router.post("/api/v1/erasures", status_code=201, summary="Erase a person's personal fields",
             responses={404: {"description": "No events of that person are left to erase"},
                        409: {"description": "A legal hold covers some of the events (named), or they predate "
                                             "canonical form version 2"}})
async def create_erasure(request: Request, body: ErasureCreate, principal: CurrentPrincipal,
                         storage: StorageDep) -> ErasurePublic:
    """Every event of the person, and every other event whose personal fields mention their email or
    user_id, loses its personal fields (client_ip and url read "[erased]", the others null) and keeps the
    salted commitment its hash covers, so verification, proofs and checkpoints still
    hold (docs/integrity.md §13). Recorded as `erasure.performed`, with the reason but not the values."""
    await authorize_admin(request, storage, principal)
    done = await run_in_threadpool(erase_person, storage, principal.org_id, user_email=body.user_email,
                                   user_id=body.user_id, reason=body.reason, origin=origin_of(request),
                                   actor=principal)
    return ErasurePublic(events=done.events, mentions=done.mentions, first_seq=done.first_seq, last_seq=done.last_seq,
                         fields=list(done.fields), event_uuid=done.event_uuid)
