"""`auditkeep signing-key`: show and rotate the checkpoint signing key (AUDITKEEP_SIGNING_KEY_PATH)."""

from __future__ import annotations

from pathlib import Path

import typer

from auditkeep.cli._common import cli_origin, err_console, fail, one_line_errors, store
from auditkeep.ingest import checkpointing
from auditkeep.ingest.selfaudit import audit
from auditkeep.integrity.keyring import retired_keys_path, rotate_signing_key
from auditkeep.storage import identity

app = typer.Typer(help="The checkpoint signing key.", no_args_is_help=True)


@app.command("show")
@one_line_errors
def show() -> None:
    """Print the public key document (current and retired keys), as GET /api/v1/integrity/public_key serves it.

    Example: auditkeep signing-key show > public-keys.json
    """
    with store() as storage:
        typer.echo(checkpointing.public_key_document(storage).decode(), nl=False)


@app.command("rotate")
@one_line_errors
def rotate() -> None:
    """Sign from now on with a new key; the old public key is kept so earlier checkpoints still verify.

    The old private key is discarded; its public key joins `<key stem>.retired.json` beside the key
    file, and its cursor secret `<key stem>.retired-cursors.json` (0600), so read cursors it signed still
    verify. Running servers pick the new key up at their next checkpoint. Each organization's log records
    the rotation (`integrity.signing_key_rotate`). Prints the new public key document on stdout.

    An organization whose log refuses that event (a damaged chain) does not stop the others': each such
    organization is named on stderr with the reason, the key stays rotated, and the exit status is 1.

    Example: auditkeep signing-key rotate > public-keys.json
    """
    with store() as storage:
        path = Path(storage.settings.signing_key_path)
        try:
            old_id, new_id = rotate_signing_key(path)
        except FileNotFoundError:
            raise fail(f"no signing key at {path}: nothing to rotate (the server creates one on first use)") from None
        with storage.read() as conn:
            orgs = identity.list_orgs(conn)
        # Every organization's checkpoints change key: its own log says when and to which key.
        unrecorded: list[str] = []
        for org in orgs:
            try:
                audit(storage, org.id, "integrity.signing_key_rotate", cli_origin(), object_type="signing_key",
                      log_entry=f"Checkpoint signing key rotated: {old_id[:16]}… retired, {new_id[:16]}… current",
                      payload={"retired_key_id": old_id, "key_id": new_id})
            # Whatever one organization's chain raises (a refused seq, a head that does not parse), the key
            # has rotated already: every other organization still gets its record, and this one is named.
            except Exception as exc:
                unrecorded.append(org.name)
                err_console.print(f"error: organization {org.name!r}: the rotation could not be recorded in its "
                                  f"log: {_reason(exc)} (check it with `auditkeep verify --org {org.name}`)",
                                  markup=False)
        document = checkpointing.public_key_document(storage)
    err_console.print(f"retired key {old_id} (kept in {retired_keys_path(path)}); now signing with {new_id}",
                      markup=False)
    typer.echo(document.decode(), nl=False)
    if unrecorded:
        raise fail(f"the signing key was rotated all the same (now {new_id}), but {len(unrecorded)} of "
                   f"{len(orgs)} organizations have no integrity.signing_key_rotate event: {', '.join(unrecorded)}")


def _reason(exc: Exception) -> str:
    """An exception in one line: a database error's first line (its SQL follows), else its text."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
