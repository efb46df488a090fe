"""How healthy the replica is, measured rather than assumed: Litestream can log one error and
then report its syncs as fine while the replica no longer restores.

- Lag: the newest transaction Litestream has staged locally (`.crowd.db-litestream/ltx/0/`)
  against the newest one the replica holds; behind, the lag is the age of the oldest local
  transaction the replica lacks.
- Restore check: `litestream restore` of the replica into a temporary file, then
  `PRAGMA integrity_check` and the database's id: proof that the replica restores.

The replicator writes what it measured to a status file in the data dir (mode 0600), which the
organizer page reads; the file names the process that wrote it, so a stale one is recognised.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.backup import DB_NAME, open_private
from storage.replica import Replica
from storage.replica_store import LtxFile, ReplicaError, parse_ltx

STATUS_NAME = ".replication.json"


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def local_ltx(data_dir: Path) -> list[LtxFile]:
    """The LTX files Litestream has staged locally for the database, not yet compacted."""
    found = []
    for path in (data_dir / f".{DB_NAME}-litestream" / "ltx" / "0").glob("*.ltx"):
        try:
            written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            continue
        ltx = parse_ltx(path.name, 0, written)
        if ltx is not None:
            found.append(ltx)
    return found


def lag(local: list[LtxFile], remote: list[LtxFile], now: datetime) -> dict[str, Any]:
    """Newest local and replicated transaction ids, and how far the replica is behind (s)."""
    newest_local = max((f.max_txid for f in local), default=0)
    newest_remote = max((f.max_txid for f in remote), default=0)
    missing = [f.written_at for f in local if f.max_txid > newest_remote]
    behind_s = (now - min(missing)).total_seconds() if missing else 0.0
    return {
        "local_txid": newest_local,
        "replica_txid": newest_remote,
        "lag_s": round(max(0.0, behind_s), 1),
    }


def restore_check(replica: Replica, scratch_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Restore the replica into a temporary file and check it: {at, ok, detail, seconds}."""
    started, at = time.monotonic(), utc_now()
    scratch = Path(tempfile.mkdtemp(prefix=".restore-check-", dir=scratch_dir))
    try:
        replica.restore_database(scratch / DB_NAME, timeout_s)
        db_id = replica.check_restored(scratch / DB_NAME)
        ok, detail = True, f"restored and intact (database {db_id})"
    except ReplicaError as exc:
        ok, detail = False, str(exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "at": iso(at),
        "ok": ok,
        "detail": detail,
        "seconds": round(time.monotonic() - started, 2),
    }


def write_status(data_dir: Path, status: dict[str, Any]) -> None:
    """Replace the status file at once (a reader never sees half of it)."""
    path = data_dir / STATUS_NAME
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}")
    with open_private(partial) as sink:
        sink.write(json.dumps(status, indent=1).encode())
    partial.replace(path)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    try:
        status = json.loads((data_dir / STATUS_NAME).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None
