"""The real app in a subprocess, and a real S3-compatible server (moto's server mode) on
loopback, for the tests that stop, kill, wipe and restart: tests/test_replica*.py and the fault
matrix in scripts/fault_matrix.py."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "organizer-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    """os.environ without the AWS_* variables a test does not set itself: these machines set
    AWS_CA_BUNDLE, with which Litestream's S3 client refuses to start (docs: trials.md)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


class S3Server:
    """`moto_server` on a free loopback port, checking signatures like a real store: its first
    three requests (before authentication starts) make an IAM user whose keys the tests use,
    so a wrong secret or an unknown key id is refused as S3 would. `bucket()` makes a fresh
    bucket."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        binary = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            env={**clean_env(), "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(
                        f"moto_server did not start:\n{log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        self.key_id, self.secret = self._make_keys()

    def _make_keys(self) -> tuple[str, str]:
        import json

        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="crowd")
        everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="crowd",
            PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [everything]}),
        )
        key = iam.create_access_key(UserName="crowd")["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def env(self) -> dict[str, str]:
        return {
            "CROWD_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
        )

    def bucket(self) -> str:
        name = f"crowd-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> dict[str, bytes]:
        client, found = self.client(), {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])[
                    "Body"
                ].read()
        return found

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class App:
    """`python app.py` on the tiny model, a fresh port each start, its log kept per start."""

    def __init__(self, tmp_path: Path, base_model: str, replica: str | None, extra: dict = {}):  # noqa: B006
        self.tmp_path, self.data_dir = tmp_path, tmp_path / "data"
        self.env = {
            **clean_env(),
            "CROWD_DATA_DIR": str(self.data_dir),
            "CROWD_BASE_MODEL": base_model,
            "CROWD_DEVICE": "cpu",
            "CROWD_MAX_NEW_TOKENS": "6",
            "CROWD_WORKER": "false",
            "CROWD_REPLICA_SYNC_MS": "200",
            "CROWD_ORGANIZER_SECRET": KEY,
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            **extra,
        }
        for name in ("CROWD_IDENTITY_SECRET", "CROWD_BACKUP_KEY", "CROWD_REPLICA"):
            self.env.pop(name, None)
        if replica is not None:
            self.env["CROWD_REPLICA"] = replica
        self.starts = 0
        self.process: subprocess.Popen | None = None
        self.url = ""

    @property
    def log(self) -> Path:
        return self.tmp_path / f"app-{self.starts}.log"

    def launch(self) -> subprocess.Popen:
        self.starts += 1
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env={**self.env, "CROWD_PORT": str(port)},
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        return self.process

    def start(self, timeout_s: float = 180) -> str:
        """Start and wait for the first page; AssertionError with the log if it exits."""
        process = self.launch()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the app exited ({process.returncode}):\n{self.text()}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return self.url
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the app did not answer in {timeout_s} s:\n{self.text()}")

    def run_to_exit(self, timeout_s: float = 120) -> int:
        """Start, expecting the app to refuse: its exit status."""
        return self.launch().wait(timeout_s)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def text(self) -> str:
        return self.log.read_text()[-4000:]


def volunteer(url: str, name: str) -> tuple[object, str, list[int], int]:
    """A volunteer joins, chats once, rewrites and rates the reply; returns (client, token,
    acknowledged correction ids, the reply's message id)."""
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    token = client.predict(name, True, api_name="/api_join")
    reply = client.predict(token, None, f"Hello from {name}", api_name="/api_chat")
    rewrite = client.predict(
        token, reply["message_id"], f"A kind reply to {name}.", api_name="/api_rewrite"
    )
    rating = client.predict(token, reply["message_id"], 1, api_name="/api_rate")
    return client, token, [rewrite, rating], reply["message_id"]


def correction_ids(db: Path) -> set[int]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM corrections")}
    finally:
        conn.close()


def restart_on_a_wiped_disk(app: App, people: list) -> None:
    """Wipe the data dir (what a Space restart does to its disk), start again, and check that
    the start restored from the replica, with every acknowledged correction, and that every
    volunteer's token still works."""
    import shutil

    from gradio_client import Client

    acknowledged = {cid for _, _, ids, _ in people for cid in ids}
    shutil.rmtree(app.data_dir)
    url = app.start()
    restored = [line for line in app.text().splitlines() if "from the replica" in line]
    assert len(restored) == 1 and "identity key file" in restored[0], app.text()
    assert acknowledged <= correction_ids(app.data_dir / "crowd.db")
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    for _, token, _, message_id in people:
        assert client.predict(token, message_id, "Still me.", api_name="/api_rewrite") > 0
