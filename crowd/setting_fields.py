"""How one environment setting is declared and read: `setting(...)` makes the dataclass field
(its variable, default, parser and help), each parser checks a variable's text and gives the
range the README's table shows, and `from_env` builds a settings dataclass from them.
`crowd.config` declares every setting with these, as `crowd.campaign_fields` does for the
campaign's."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from storage.replica_store import S3Location


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True)
class Parse:
    """A variable's parser (text -> value, or ValueError saying why not) and its range as the
    README's table shows it."""

    read: Callable[[str], Any]
    range: str = ""

    def __call__(self, raw: str) -> Any:
        return self.read(raw)


def _in_range(convert: Callable[[str], Any], what: str, low: Any, high: Any, shown: str) -> Parse:
    def parse(raw: str) -> Any:
        value = convert(raw)
        if not low <= value <= high:
            raise ValueError(f"must be {what} from {low} to {high}")
        return value

    return Parse(parse, shown)


def int_in(low: int, high: int) -> Parse:
    return _in_range(int, "an integer", low, high, f"{low}-{high}")


def float_in(low: float, high: float) -> Parse:
    return _in_range(float, "a number", low, high, f"{low:g}-{high:g}")


def one_of(*options: str) -> Parse:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw.lower()

    return Parse(parse, ", ".join(options))


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


yes_no = Parse(_flag, "true, false")


def _repo_id(raw: str) -> str:
    if raw.count("/") != 1 or not all(raw.split("/")):
        raise ValueError("must be a Hugging Face repo id, OWNER/NAME")
    return raw


repo_id = Parse(_repo_id, "OWNER/NAME")


def _flavor(raw: str) -> str:
    """A Jobs hardware flavor that huggingface_hub knows (its JobHardware list)."""
    from huggingface_hub import JobHardware

    known = [flavor.value for flavor in JobHardware]
    if raw not in known:
        raise ValueError(f"must be a Jobs hardware flavor: {', '.join(known)}")
    return raw


jobs_flavor = Parse(
    _flavor, "t4-small, l4x1, a10g-small, a100-large, h200, ... (`hf jobs hardware`)"
)


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1]) == 0:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


http_url = Parse(_url, "http(s)://HOST:PORT")


def local_path(raw: str) -> Path:
    return Path(raw).expanduser()


def secret(min_chars: int) -> Parse:
    """A secret typed by a person or made by a tool: at least `min_chars` characters (compared
    as UTF-8 bytes wherever it is checked, so any text works)."""

    def parse(raw: str) -> str:
        if len(raw) < min_chars:
            raise ValueError(f"must be at least {min_chars} characters (openssl rand -hex 32)")
        raw.encode("utf-8")  # a lone surrogate cannot be compared as bytes: refuse it here
        return raw

    return Parse(parse, f">= {min_chars} characters")


def folder_path(raw: str) -> Path:
    if "://" in raw and not raw.startswith("file://"):
        raise ValueError("must be a folder (e.g. the storage bucket's mount), not a URL")
    return Path(raw.removeprefix("file://")).expanduser()


def replica_place(raw: str) -> Path | S3Location:
    """A folder (a storage bucket's mount, or any local path) or `s3://BUCKET/PATH`."""
    if raw.startswith("s3://"):
        bucket, _, prefix = raw.removeprefix("s3://").partition("/")
        if "@" in bucket or "?" in raw:
            raise ValueError(
                "an s3:// URL holds no credentials or options: set AWS_ACCESS_KEY_ID,"
                " AWS_SECRET_ACCESS_KEY and CROWD_S3_ENDPOINT instead"
            )
        if not bucket:
            raise ValueError("an s3:// URL needs a bucket: s3://BUCKET/PATH")
        return S3Location(bucket, prefix.strip("/"))
    if "://" in raw and not raw.startswith("file://"):
        raise ValueError("must be a folder (e.g. the storage bucket's mount) or s3://BUCKET/PATH")
    return Path(raw.removeprefix("file://")).expanduser()


def setting(
    env: str | tuple[str, ...],
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    *,
    shown: str | None = None,
    secret: bool = False,
) -> Any:
    """A dataclass field read from `env` (the first of several names that is set wins),
    parsed and range-checked by `parse`, documented by `help`. `shown` is the default as the
    README's table gives it, when the value itself would not read well there."""
    names = (env,) if isinstance(env, str) else env
    meta = {"env": names, "help": help, "parse": parse, "shown": shown, "secret": secret}
    return field(default=default, metadata=meta, repr=not secret)


def read_value(
    env: Mapping[str, str], names: tuple[str, ...], parse: Callable[[str], Any], secret: bool
) -> Any:
    """The parsed value of the first of `names` that is set, or None when none is. A bad
    secret's message never holds its value, nor does a URL's that holds credentials
    (start-up errors end up in logs)."""
    for name in names:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            return parse(raw.strip())
        except (ValueError, TypeError) as exc:
            hidden = secret or re.search(r"://[^/]*@", raw)  # a URL with a password in it
            shown = f"{name} (its value is not shown)" if hidden else f"{name}={raw!r}"
            raise ConfigError(f"{shown} is not valid: {exc}") from None
    return None


def _nested(f: Any) -> type | None:
    """The settings dataclass a field holds (Settings.model, .training), or None."""
    factory = f.default_factory
    return factory if isinstance(factory, type) and is_dataclass(factory) else None


def from_env(cls: type, env: Mapping[str, str]) -> Any:
    """An instance of the settings dataclass `cls`, its declared fields read from `env` (and
    those of the settings dataclasses it holds)."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if "env" in f.metadata:
            meta = f.metadata
            value = read_value(env, meta["env"], meta["parse"], meta["secret"])
            if value is not None:
                values[f.name] = value
        elif (nested := _nested(f)) is not None:
            values[f.name] = from_env(nested, env)
    return cls(**values)


def declared_in(cls: type) -> Iterator[tuple[str, Any, dict]]:
    """(field name, default, metadata) of every setting of `cls` read from the environment, in
    order, those of the settings dataclasses it holds in their place."""
    for f in fields(cls):
        if "env" in f.metadata:
            yield f.name, f.default, dict(f.metadata)
        elif (nested := _nested(f)) is not None:
            yield from declared_in(nested)
