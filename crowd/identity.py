"""Server-issued anonymous identities: a participant id signed with a secret kept in the data
dir. The browser stores the token; an edited or forged token fails verification."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

SECRET_FILE = "identity.key"


def load_secret(data_dir: Path) -> str:
    """The signing secret, created on first use (mode 600) and kept across restarts."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def random_id() -> str:
    return uuid.uuid4().hex


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
