"""Push a model export to a Hugging Face model repo: private unless asked to publish.

The Hub is reached through a small protocol (create_repo, repo_info, upload_folder), the same
three calls as the backup push in `crowd.sync`, so tests push to a folder on disk implementing
it. Visibility is settled before anything is built: a refused push writes nothing, locally or on
the Hub (a new repo is created empty and private).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crowd.hub import Hub
from crowd.model_export.champion import ModelExportError

REPO_TYPE = "model"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class PushFailed(RuntimeError):
    """The upload itself failed (network, permissions); nothing was written locally either."""


@dataclass(frozen=True)
class PushTarget:
    repo_id: str
    hub: Hub
    public: bool = False


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id or ""):
        raise ModelExportError(f"{repo_id!r} is not a Hugging Face repo id: use OWNER/NAME")
    return repo_id


def connect_hub(token: str | None, make: Callable[[str], Hub] | None = None) -> Hub:
    """A Hub client for `token` (default: `huggingface_hub.HfApi`), or a message naming what is
    missing when there is no token."""
    if not token:
        raise ModelExportError(
            "pushing needs a Hugging Face token with write access: set HF_TOKEN (or "
            "CROWD_HF_TOKEN) and run the command again"
        )
    if make is not None:
        return make(token)
    from huggingface_hub import HfApi

    return HfApi(token=token)


def prepare_repo(target: PushTarget) -> None:
    """Create the repo if new (private unless `public`) and refuse a visibility mismatch: a
    public repo without --public, or a private one with it."""
    check_repo_id(target.repo_id)
    target.hub.create_repo(
        target.repo_id, repo_type=REPO_TYPE, private=not target.public, exist_ok=True
    )
    info = target.hub.repo_info(target.repo_id, repo_type=REPO_TYPE)
    private = bool(getattr(info, "private", False))  # unknown counts as public: the safe side
    if not target.public and not private:
        raise ModelExportError(
            f"{target.repo_id} is public: add --public to publish there, or push to a new or "
            "private repo"
        )
    if target.public and private:
        raise ModelExportError(
            f"{target.repo_id} exists and is private: make it public on the Hub first, or push "
            "without --public"
        )


def upload(target: PushTarget, folder: Path, message: str) -> None:
    """Upload the finished export folder as one commit; PushFailed if the Hub refuses it."""
    try:
        target.hub.upload_folder(
            repo_id=target.repo_id,
            folder_path=str(folder),
            repo_type=REPO_TYPE,
            commit_message=message,
        )
    except Exception as exc:  # network, auth, quota: the caller reports it and writes nothing
        raise PushFailed(f"the upload to {target.repo_id} failed: {exc}") from exc
