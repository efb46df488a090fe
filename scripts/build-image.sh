#!/usr/bin/env bash
# Build the Space image with podman and smoke-test it, on a machine without Docker Hub and where
# `podman run` cannot start containers (crun: setrlimit RLIMIT_NOFILE). Adapted from
# ../shared/tools/build_image.sh. Not part of `make test` or CI: it downloads several GB.
#
# Usage (root; apt-get install -y debootstrap podman buildah): scripts/build-image.sh [WORK_DIR]
#
# The smoke test runs inside the image as uid 1000 (a buildah working container, chroot
# isolation, the host's network): the first page answers; a volunteer joins, chats and rewrites
# through the public API with CROWD_REPLICA set; the app is stopped (SIGTERM), its data dir
# wiped, and started again: the correction is back and the volunteer's token still works.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
tag=localhost/crowd-sft:try
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
mkdir -p "$work"
cd "$work"

# 1. A stand-in for python:3.11-slim: Debian bookworm (python3 = 3.11), tagged so that the
#    Dockerfile's FROM resolves to it locally. (It proves the build on Debian's Python 3.11.2
#    and pip 23, not on the real base image.)
if ! podman image exists localhost/python:3.11-slim; then
  rm -rf rootfs
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm rootfs "$mirror"
  rm -rf rootfs/var/lib/apt/lists/* rootfs/var/cache/apt/archives/*.deb
  tar -C rootfs -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - localhost/python:3.11-slim
  rm -rf rootfs
fi

# 2. Build (chroot isolation runs RUN steps without crun; the host's CA bundle is mounted for
#    the build only: PyPI is reached here through a TLS proxy that only the host trusts).
started=$(date +%s)
podman build --isolation chroot --pull=never \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  -t "$tag" "$src"
echo "build: $(( $(date +%s) - started )) s"
podman image inspect "$tag" --format 'image size: {{.Size}} bytes'

# 3. The smoke test, as uid 1000 inside the image.
mkdir -p smoke
cat > smoke/smoke.py <<'PY'
import os, shutil, signal, socket, sqlite3, subprocess, sys, time, urllib.request

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
url = f"http://127.0.0.1:{port}/"
os.makedirs("/tmp/replica", exist_ok=True)
env = {**os.environ, "CROWD_PORT": str(port), "CROWD_DATA_DIR": "/tmp/data",
       "CROWD_REPLICA": "/tmp/replica", "CROWD_WORKER": "false", "CROWD_MAX_NEW_TOKENS": "8"}

def start(n):
    log = open(f"/tmp/app-{n}.log", "w")
    proc = subprocess.Popen(["python", "app.py"], env=env, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.time()
    while time.time() - t0 < 300:
        if proc.poll() is not None:
            sys.exit(f"the app exited:\n{open(f'/tmp/app-{n}.log').read()[-2000:]}")
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                print(f"start {n}: first page after {time.time() - t0:.1f} s", flush=True)
                return proc
        except OSError:
            time.sleep(0.5)
    sys.exit("no page in 300 s")

def stop(proc):
    proc.send_signal(signal.SIGTERM)
    print(f"stopped with status {proc.wait(90)}", flush=True)

from gradio_client import Client

proc = start(1)
client = Client(url, verbose=False, download_files=False)
token = client.predict("Smoke", True, api_name="/api_join")
reply = client.predict(token, None, "Hello!", api_name="/api_chat")
correction = client.predict(token, reply["message_id"], "Hello, friend!", api_name="/api_rewrite")
print(f"correction {correction} acknowledged", flush=True)
stop(proc)
shutil.rmtree("/tmp/data")
proc = start(2)
try:
    log = open("/tmp/app-2.log").read()
    assert "from the replica" in log, log[-2000:]
    ids = {r[0] for r in sqlite3.connect("/tmp/data/crowd.db").execute("SELECT id FROM corrections")}
    assert correction in ids, ids
    again = Client(url, verbose=False, download_files=False).predict(
        token, reply["message_id"], "Still me.", api_name="/api_rewrite")
    print(f"after a wiped disk: correction {correction} restored, the token still works ({again})")
    assert "Converting" not in open("/tmp/app-1.log").read(), "the model was converted at start"
finally:
    stop(proc)
PY
ctr=$(buildah from --pull-never "$tag")
trap 'buildah rm "$ctr" >/dev/null' EXIT
buildah run --isolation chroot --user 1000:1000 "$ctr" -- \
  python -c "import crowd, gradio, torch; print('imports ok', torch.__version__, gradio.__version__)"
if buildah run --isolation chroot --user 1000:1000 "$ctr" -- python -c "import pytest" 2>/dev/null; then
  echo "pytest is in the image: test-only packages must stay out" >&2
  exit 1
fi
buildah run --isolation chroot --user 1000:1000 -v "$work/smoke:/smoke:ro" "$ctr" -- \
  python /smoke/smoke.py
echo "smoke test passed"
