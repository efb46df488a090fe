"""Server-issued anonymous identities: a participant id signed with a secret. The browser stores
the token; an edited or forged token fails verification.

The secret is CROWD_IDENTITY_SECRET when set (on a Space: a secret, so a new Space recovered from
a replica or a backup keeps every token valid), else a key file in the data dir, which backups
and the replica then carry. The same secrets sign backup manifests (see `backup_signer`).
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

from crowd.config import Settings

SECRET_FILE = "identity.key"


def load_secret(data_dir: Path, secret: str | None = None) -> str:
    """`secret` (CROWD_IDENTITY_SECRET) when given; else the data dir's key file, created on
    first use (mode 0600 from the start, all at once) and kept across restarts."""
    if secret:
        return secret
    path = data_dir / SECRET_FILE
    if not path.exists():
        _create_key_file(path)
    return path.read_text().strip()


def random_id() -> str:
    return uuid.uuid4().hex


def _create_key_file(path: Path) -> None:
    """Write a new key beside `path` with mode 0600, then link it into place: the key file is
    never readable by others nor half-written, and two processes starting at once agree on
    one key (the second link fails and that process reads the first one's key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink(missing_ok=True)


def key_file(settings: Settings) -> Path | None:
    """The identity key file when the identity comes from it (backups and the replica carry
    it then), else None."""
    return None if settings.identity_secret else settings.data_dir / SECRET_FILE


def backup_signer(settings: Settings) -> tuple[bytes, str]:
    """(secret, where it comes from) that signs a new backup's manifest."""
    if settings.backup_key:
        return settings.backup_key.encode(), "CROWD_BACKUP_KEY"
    if settings.identity_secret:
        return settings.identity_secret.encode(), "CROWD_IDENTITY_SECRET"
    return load_secret(settings.data_dir).encode(), f"the key file {SECRET_FILE}"


def backup_keys(settings: Settings, extra: Path | None = None) -> list[bytes]:
    """Every secret a genuine backup may be signed with: CROWD_BACKUP_KEY, CROWD_IDENTITY_SECRET,
    the data dir's existing key file, and `extra` (a saved copy of a key file). None of them
    comes from the archive being checked."""
    keys = [s.encode() for s in (settings.backup_key, settings.identity_secret) if s]
    for path in (settings.data_dir / SECRET_FILE, extra):
        if path is not None and path.is_file():
            keys.append(path.read_bytes().strip())
    return keys


class Identities:
    def __init__(self, secret: str, new_id: Callable[[], str] = random_id):
        self._serializer = URLSafeSerializer(secret, salt="crowd-participant")
        self.new_id = new_id  # a simulation names its volunteers so that runs repeat

    def sign(self, participant_id: str) -> str:
        return self._serializer.dumps(participant_id)

    def verify(self, token: str | None) -> str | None:
        """The participant id inside a genuine token; None for a missing, edited or forged one."""
        if not token or not isinstance(token, str) or len(token) > 512:
            return None
        try:
            value = self._serializer.loads(token)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None
