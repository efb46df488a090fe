"""The part of `huggingface_hub.HfApi` the app's pushes use (backups in `crowd.sync`, models in
`crowd.model_export.push`): three calls, so tests push to a folder on disk implementing them."""

from __future__ import annotations

from typing import Any, Protocol


class Hub(Protocol):
    def create_repo(
        self, repo_id: str, *, repo_type: str, private: bool, exist_ok: bool
    ) -> Any: ...

    def repo_info(self, repo_id: str, *, repo_type: str) -> Any: ...  # has `.private`

    def upload_folder(
        self, *, repo_id: str, folder_path: str, repo_type: str, commit_message: str
    ) -> Any: ...
