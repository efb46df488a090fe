"""Where a replica lives: a folder (e.g. a storage bucket's mount) or an S3 bucket (any
S3-compatible store, such as Hugging Face's gateway `https://s3.hf.co/<namespace>`).

Both stores hold the same layout under their root (see `storage.replica`), offer the same few
file operations to the replica, and tell Litestream how to reach them: Litestream streams the
database itself, with its own S3 client; the files beside the database (adapters, the key file,
the marker) go through this module, with boto3 for S3. boto3 rather than Litestream for those:
Litestream replicates SQLite databases only, and boto3 is the reference S3 client (signing,
retries, multipart uploads of large adapters) that the S3-compatible stores test against.

Every error becomes a `ReplicaError` whose message names the store and the setting to fix, and
never holds a credential.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

COMPLETE = ".complete"  # the last object of an adapter folder in S3: the folder is whole
DEFAULT_REGION = "us-east-1"  # what S3-compatible stores (Hugging Face's gateway too) expect


class ReplicaError(RuntimeError):
    """The replica cannot be used; the message names it and says why."""


class ReplicaConflict(ReplicaError):
    """The replica belongs to another database (or holds data without a database): writing
    to it would destroy that data, so it is never written, however often one retries."""


@dataclass(frozen=True)
class LtxFile:
    """One of Litestream's LTX files in a replica: transactions `min_txid`..`max_txid`."""

    level: int
    min_txid: int
    max_txid: int
    written_at: datetime


def parse_ltx(name: str, level: int, written_at: datetime) -> LtxFile | None:
    """'0000000000000001-0000000000000003.ltx' -> LtxFile; None for any other name."""
    stem, _, ext = name.rpartition(".")
    low, _, high = stem.partition("-")
    try:
        return LtxFile(level, int(low, 16), int(high, 16), written_at) if ext == "ltx" else None
    except ValueError:
        return None


class ReplicaStore(Protocol):
    where: str  # for messages: the folder, or s3://BUCKET/PATH (with the endpoint)

    def check_writable(self) -> None: ...
    def read_bytes(self, name: str) -> bytes | None: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def has_folder(self, name: str) -> bool: ...
    def put_folder(self, source: Path, name: str) -> None: ...
    def get_folder(self, name: str, target: Path) -> bool: ...
    def ltx_files(self, db_folder: str) -> list[LtxFile]: ...
    def litestream_replica(self, db_folder: str, every: str) -> list[str]: ...
    def litestream_url(self, db_folder: str) -> str: ...
    def litestream_env(self, environ: Mapping[str, str]) -> dict[str, str]: ...


def _quote(text: str) -> str:
    """A YAML scalar: a JSON string is valid YAML, and Litestream is told not to expand `$`."""
    import json

    return json.dumps(text)


# --- a folder --------------------------------------------------------------------------------


class FolderStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.where = str(self.root)

    def check_writable(self) -> None:
        """Prove the folder exists and takes a file. Never creates it: a bucket that is not
        mounted must not become a folder on the container's own disk."""
        if not self.root.is_dir():
            raise ReplicaError(
                f"CROWD_REPLICA={self.where!r} does not exist (is the storage bucket mounted?)"
            )
        try:
            probe = self.root / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ReplicaError(f"the replica folder {self.where} is not writable: {exc}") from None

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        from storage.backup import open_private

        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
        with open_private(partial) as sink:
            sink.write(data)
        partial.replace(path)

    def has_folder(self, name: str) -> bool:
        return (self.root / name).is_dir()

    def put_folder(self, source: Path, name: str) -> None:
        """Copied beside, then renamed in: a folder in the replica is always whole."""
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
        shutil.copytree(source, partial, symlinks=True)
        partial.rename(target)

    def get_folder(self, name: str, target: Path) -> bool:
        source = self.root / name
        if not source.is_dir() or source.is_symlink():
            return False
        shutil.copytree(source, target, symlinks=True)
        return True

    def ltx_files(self, db_folder: str) -> list[LtxFile]:
        """Litestream's file replica keeps LTX files in db/ltx/LEVEL/."""
        found = []
        for path in (self.root / db_folder / "ltx").glob("*/*.ltx"):
            try:
                level, stat = int(path.parent.name), path.stat()
            except (ValueError, OSError):
                continue
            ltx = parse_ltx(path.name, level, datetime.fromtimestamp(stat.st_mtime, UTC))
            if ltx is not None:
                found.append(ltx)
        return found

    def litestream_replica(self, db_folder: str, every: str) -> list[str]:
        return [
            "      type: file",
            f"      path: {_quote(str((self.root / db_folder).resolve()))}",
            f"      sync-interval: {every}",
        ]

    def litestream_url(self, db_folder: str) -> str:
        return (self.root / db_folder).resolve().as_uri()

    def litestream_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        return dict(environ)


# --- an S3 bucket ----------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Location:
    """`s3://BUCKET/PATH`: the bucket, and the key prefix the replica lives under."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True)
class S3Access:
    """How to reach the bucket: the endpoint (None: AWS itself), region and credentials."""

    endpoint: str | None
    region: str
    key_id: str
    secret: str


class S3Store:
    def __init__(self, location: S3Location, access: S3Access):
        self.location, self.access = location, access
        at = f" at CROWD_S3_ENDPOINT={access.endpoint}" if access.endpoint else ""
        self.where = f"{location}{at}"
        self._client = None

    @property
    def client(self):
        """A boto3 client set up as S3-compatible stores need it: path-style addressing with
        a custom endpoint, and checksums only where the API requires them (recent clients
        otherwise send trailing checksums that Hugging Face's gateway and others refuse)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            style = "path" if self.access.endpoint else "auto"
            self._client = boto3.client(
                "s3",
                endpoint_url=self.access.endpoint,
                region_name=self.access.region,
                aws_access_key_id=self.access.key_id,
                aws_secret_access_key=self.access.secret,
                config=Config(
                    s3={"addressing_style": style},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
        return self._client

    def key(self, name: str) -> str:
        return f"{self.location.prefix}/{name}" if self.location.prefix else name

    def _failed(self, exc: Exception) -> ReplicaError:
        """What went wrong, in the terms of the settings that fix it (never a credential)."""
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            why = f"the bucket {self.location.bucket!r} does not exist (create it first)"
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            why = (
                f"the store refuses the credentials ({code}): check AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY (a write token's S3 keys on Hugging Face)"
            )
        elif code:
            why = f"the store answered {code}"
        else:
            why = f"cannot reach it ({type(exc).__name__}): check CROWD_S3_ENDPOINT"
        return ReplicaError(f"the S3 replica {self.where} cannot be used: {why}")

    def _call(self, method: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.location.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(exc) from None

    def check_writable(self) -> None:
        """Prove the bucket exists and the credentials may write: put and delete a probe."""
        probe = self.key(f".probe-{uuid.uuid4().hex}")
        self._call("put_object", Key=probe, Body=b"ok")
        self._call("delete_object", Key=probe)

    def read_bytes(self, name: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.location.bucket, Key=self.key(name))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._failed(exc) from None
        except BotoCoreError as exc:  # the endpoint cannot be reached
            raise self._failed(exc) from None
        return body.read()

    def write_bytes(self, name: str, data: bytes) -> None:
        self._call("put_object", Key=self.key(name), Body=data)

    def _keys(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """(name relative to the root, when written) of every object under `prefix`."""
        token: dict = {}
        start = self.key(prefix.rstrip("/") + "/")
        while True:
            page = self._call("list_objects_v2", Prefix=start, **token)
            for item in page.get("Contents", []):
                yield item["Key"][len(self.key("")) :], item["LastModified"]
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def has_folder(self, name: str) -> bool:
        return self.read_bytes(f"{name}/{COMPLETE}") is not None

    def put_folder(self, source: Path, name: str) -> None:
        """Every file, then the `.complete` marker: a folder without it is ignored."""
        from botocore.exceptions import BotoCoreError, ClientError

        for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink()):
            relative = path.relative_to(source).as_posix()
            try:
                self.client.upload_file(
                    str(path), self.location.bucket, self.key(f"{name}/{relative}")
                )
            except (BotoCoreError, ClientError, OSError) as exc:
                raise self._failed(exc) from None
        self.write_bytes(f"{name}/{COMPLETE}", b"")

    def get_folder(self, name: str, target: Path) -> bool:
        if not self.has_folder(name):
            return False
        for key, _ in self._keys(name):
            relative = key[len(name) + 1 :]
            if relative == COMPLETE or ".." in relative.split("/"):
                continue
            data = self.read_bytes(key)
            if data is None:
                return False
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_bytes(data)
        return True

    def ltx_files(self, db_folder: str) -> list[LtxFile]:
        """Litestream's S3 replica keeps LTX files in db/LEVEL/ (4 hex digits)."""
        found = []
        for key, written in self._keys(db_folder):
            parts = key.split("/")
            try:
                level = int(parts[-2], 16)
            except (ValueError, IndexError):
                continue
            ltx = parse_ltx(parts[-1], level, written)
            if ltx is not None:
                found.append(ltx)
        return found

    def litestream_replica(self, db_folder: str, every: str) -> list[str]:
        lines = [
            "      type: s3",
            f"      bucket: {_quote(self.location.bucket)}",
            f"      path: {_quote(self.key(db_folder))}",
            f"      region: {_quote(self.access.region)}",
            f"      sync-interval: {every}",
        ]
        if self.access.endpoint:
            lines += [
                f"      endpoint: {_quote(self.access.endpoint)}",
                "      force-path-style: true",
            ]
        return lines

    def litestream_url(self, db_folder: str) -> str:
        query = {"region": self.access.region}
        if self.access.endpoint:
            query |= {"endpoint": self.access.endpoint, "forcePathStyle": "true"}
        return f"s3://{self.location.bucket}/{self.key(db_folder)}?{urlencode(query)}"

    def litestream_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """`environ` with the credentials, which Litestream reads from its environment (never
        from a file). Over plain http there is no certificate to check, and an AWS_CA_BUNDLE
        would only stop Litestream's S3 client from starting ("unable to add custom RootCAs"),
        so it is left out then."""
        env = {**environ, "AWS_ACCESS_KEY_ID": self.access.key_id}
        env["AWS_SECRET_ACCESS_KEY"] = self.access.secret
        if (self.access.endpoint or "").startswith("http://"):
            env.pop("AWS_CA_BUNDLE", None)
        return env
