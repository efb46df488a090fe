"""The Docker Space image, checked by reading its files (there is no Docker engine here): it
installs with the same script as `make`, runs as uid 1000 on port 7860 with the data dir at
/data, and starts the same entry point as `make run`."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from crowd.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "scripts/install.sh"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return instructions(ROOT / "Dockerfile")


def recipe(target_prefix: str) -> list[str]:
    """The command lines of the Makefile rule whose target starts with `target_prefix`."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(target_prefix) and ":" in line:
            body = []
            for command in lines[i + 1 :]:
                if not command.startswith("\t"):
                    break
                body.append(command.strip())
            return body
    raise AssertionError(f"no Makefile rule for {target_prefix}")


def env(docker: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for keyword, args in docker:
        if keyword == "ENV":
            values.update(part.split("=", 1) for part in shlex.split(args))
    return values


def test_the_image_and_make_install_with_the_same_script(docker):
    assert docker[0] == ("FROM", "python:3.11-slim")
    runs = [args for keyword, args in docker if keyword == "RUN"]
    assert any(args.split()[0] == INSTALL for args in runs)
    assert any(line.split()[0] == INSTALL for line in recipe("$(STAMP)"))
    assert (ROOT / INSTALL).stat().st_mode & 0o111, "install.sh must be executable"
    subprocess.run(["bash", "-n", str(ROOT / INSTALL)], check=True)


def test_what_install_reads_is_copied_before_it_runs(docker):
    install_at = next(i for i, (k, a) in enumerate(docker) if k == "RUN" and INSTALL in a)
    copied = set()
    for keyword, args in docker[:install_at]:
        if keyword == "COPY":
            copied.update(a for a in shlex.split(args)[:-1] if not a.startswith("--"))
    script = (ROOT / INSTALL).read_text()
    needed = set(re.findall(r"\$here/([\w./-]+)", script))
    if '-e "$here"' in script:
        needed.add("pyproject.toml")  # what the editable install of the project reads
    assert needed and needed | {INSTALL} <= copied
    for name in copied:
        assert (ROOT / name).exists(), f"the Dockerfile copies {name}, which does not exist"


def test_it_runs_as_uid_1000_and_never_as_root_after_setup(docker):
    users = [args for keyword, args in docker if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    created = next(args for keyword, args in docker if keyword == "RUN" and "useradd" in args)
    assert re.search(r"(--uid|-u)\s+1000\b", created)
    assert f" {users[-1]}" in created.split("&&")[0]  # the user it switches to is uid 1000
    install_at = next(i for i, (k, a) in enumerate(docker) if k == "RUN" and INSTALL in a)
    assert any(k == "USER" for k, _ in docker[:install_at]), "install as the user, not root"


def test_port_host_and_data_dir_reach_the_settings(docker):
    assert ("EXPOSE", "7860") in docker
    values = env(docker)
    settings = load_settings(values)
    assert (settings.host, settings.port, str(settings.data_dir)) == ("0.0.0.0", 7860, "/data")
    mkdir = next(args for keyword, args in docker if keyword == "RUN" and "/data" in args)
    assert "mkdir -p /data" in mkdir and "chown" in mkdir


def test_it_starts_the_same_entry_point_as_make_run(docker):
    cmd = next(args for keyword, args in docker if keyword == "CMD")
    argv = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    script = [part for part in argv if part.endswith(".py")]
    make_run = [part for line in recipe("run") for part in line.split() if part.endswith(".py")]
    assert script and script == make_run


def test_dockerignore_keeps_local_state_out_but_not_the_code():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for private in (".venv", "data/", ".git"):
        assert private in patterns
    for needed in ("requirements.txt", INSTALL, "crowd", "storage", "app.py", "assets"):
        assert not any(Path(needed).match(p.rstrip("/")) for p in patterns), needed


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(line.split("==", 1) for line in lines if line)


def test_test_only_packages_stay_out_of_the_image_and_make_installs_both(docker):
    runtime, tests = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-test.txt")
    assert runtime and tests and not set(runtime) & set(tests)  # every line pinned (==)
    assert not {"pytest", "playwright", "ruff", "mypy"} & set(runtime)
    install = next(args for keyword, args in docker if keyword == "RUN" and INSTALL in args)
    assert shlex.split(install) == [INSTALL, ".venv"]  # the image: the app's requirements only
    make = next(line for line in recipe("$(STAMP)") if line.split()[0] == INSTALL)
    assert make.split()[2:] == ["requirements-test.txt"]


def test_the_image_carries_the_converted_model_outside_the_data_dir(docker):
    settings = load_settings(env(docker))
    assert settings.models_dir == Path("/home/user/models")
    assert not settings.models_dir.is_relative_to(settings.data_dir)
    steps = [(k, a) for k, a in docker if k in ("COPY", "RUN")]
    code_at = max(
        i for i, (k, a) in enumerate(steps) if k == "COPY" and a.split()[-2:] == [".", "."]
    )
    assert ("RUN", "python -m crowd models") in steps[code_at:]


def test_the_image_works_in_dev_mode(docker):
    """Dev Mode needs bash, curl, wget, procps, git and git-lfs in the image, and the code in
    /app owned by uid 1000 (Hugging Face's Dev Mode docs)."""
    installed = " ".join(args for keyword, args in docker if keyword == "RUN" and "apt-get" in args)
    for package in ("bash", "curl", "wget", "procps", "git", "git-lfs"):
        assert re.search(rf"\binstall\b.*\s{re.escape(package)}(\s|$)", installed), package
    workdirs = [args for keyword, args in docker if keyword == "WORKDIR"]
    assert workdirs and workdirs[-1] == "/app"
    owner = next(args for keyword, args in docker if keyword == "RUN" and "useradd" in args)
    assert "/app" in owner and re.search(r"chown user:user [^&]*/app", owner)
    copies = [args for keyword, args in docker if keyword == "COPY"]
    assert copies and all(args.startswith("--chown=user") for args in copies)
    users = [i for i, (keyword, _) in enumerate(docker) if keyword == "USER"]
    apt = next(i for i, (keyword, args) in enumerate(docker) if "apt-get" in args)
    assert apt < users[0], "packages are installed as root, before switching to the user"
    assert "/app/.venv/bin" in env(docker)["PATH"]
