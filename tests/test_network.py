"""Who is calling: the X-Forwarded-For rule (believe a hop only from a trusted proxy, read
from the right), CROWD_TRUSTED_PROXIES, and the sliding windows the per-address limits use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crowd.config import ConfigError, load_settings
from crowd.limits import RateLimiter, Refused
from crowd.network import PRIVATE_NETWORKS, client_address, parse_address, parse_proxies

ROOT = Path(__file__).resolve().parent.parent
PROXY = parse_proxies("10.0.0.0/8, 2001:db8:1::/48")


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says():
    assert client_address("203.0.113.7", ["198.51.100.1"], ()) == "203.0.113.7"
    assert client_address("203.0.113.7", ["1.1.1.1, 2.2.2.2"], PROXY) == "203.0.113.7"


def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client():
    # The client forged '6.6.6.6'; the proxy appended the address it really saw.
    assert client_address("10.1.2.3", ["6.6.6.6, 203.0.113.7"], PROXY) == "203.0.113.7"
    # Two proxies in a row, the header split over two header lines.
    assert client_address("10.0.0.2", ["6.6.6.6, 203.0.113.7", "10.0.0.1"], PROXY) == (
        "203.0.113.7"
    )
    # A forged hop that claims to be a proxy does not help: the real hop is right of it.
    assert client_address("10.0.0.2", ["10.9.9.9, 203.0.113.7"], PROXY) == "203.0.113.7"


def test_a_trusted_proxy_without_a_header_is_the_client_itself():
    assert client_address("10.1.2.3", [], PROXY) == "10.1.2.3"
    assert client_address("10.1.2.3", [" , "], PROXY) == "10.1.2.3"


def test_all_hops_trusted_gives_the_left_most():
    assert client_address("10.0.0.1", ["10.0.0.3, 10.0.0.2"], PROXY) == "10.0.0.3"


def test_a_hop_that_is_not_an_address_counts_against_the_proxy_that_reported_it():
    assert client_address("10.0.0.1", ["6.6.6.6, not-an-ip"], PROXY) == "10.0.0.1"
    assert client_address("10.0.0.1", ["<script>"], PROXY) == "10.0.0.1"


def test_ipv6_peers_and_hops_with_ports_and_brackets():
    assert client_address("2001:db8:1::5", ["[2001:db8:9::7]:443"], PROXY) == "2001:db8:9::7"
    assert client_address("2001:db8:9::7", ["6.6.6.6"], PROXY) == "2001:db8:9::7"
    assert client_address("10.0.0.1", ["203.0.113.7:5050"], PROXY) == "203.0.113.7"
    assert client_address("::ffff:10.0.0.1", ["203.0.113.7"], PROXY) == "203.0.113.7"
    # An IPv4 network never contains an IPv6 address (ipaddress alone would say it may).
    assert client_address("::a00:1", ["6.6.6.6"], parse_proxies("0.0.0.0/0")) == "::a00:1"


def test_parse_address_refuses_what_is_not_an_address():
    assert parse_address("[::1") is None and parse_address("") is None
    assert parse_address("1.2.3.4:99999x") is None
    assert str(parse_address("::1")) == "::1"


def test_no_peer_means_no_address_and_a_non_ip_peer_is_kept_as_written():
    assert client_address(None, ["6.6.6.6"], PROXY) is None
    assert client_address("unix-socket", ["6.6.6.6"], PROXY) == "unix-socket"


def test_trusted_proxies_setting_reads_ips_cidrs_and_spaces():
    assert load_settings({}).trusted_proxies == ()
    settings = load_settings({"CROWD_TRUSTED_PROXIES": " 127.0.0.1, ::1 ,10.0.0.0/8,spaces"})
    assert [str(n) for n in settings.trusted_proxies[:3]] == [
        "127.0.0.1/32",
        "::1/128",
        "10.0.0.0/8",
    ]
    assert settings.trusted_proxies[3:] == PRIVATE_NETWORKS


def test_on_a_space_the_platform_proxy_is_trusted_unless_said_otherwise():
    assert load_settings({"SPACE_ID": "me/crowd"}).trusted_proxies == PRIVATE_NETWORKS
    chosen = load_settings({"SPACE_ID": "me/crowd", "CROWD_TRUSTED_PROXIES": "10.16.0.0/16"})
    assert [str(n) for n in chosen.trusted_proxies] == ["10.16.0.0/16"]


@pytest.mark.parametrize(
    "raw", ["localhost", "10.0.0.1, 10.0.0.300", "10.0.0.0/33", "spaces;rm -rf", "*"]
)
def test_a_malformed_trusted_proxies_is_refused_at_start_naming_the_variable(raw):
    with pytest.raises(ConfigError, match="CROWD_TRUSTED_PROXIES") as info:
        load_settings({"CROWD_TRUSTED_PROXIES": raw})
    assert "is not an IP address or network" in str(info.value)


def test_joins_per_hour_setting_defaults_to_a_classroom():
    assert load_settings({}).joins_per_hour == 20
    assert load_settings({"CROWD_JOINS_PER_HOUR": "0"}).joins_per_hour == 0
    with pytest.raises(ConfigError, match="CROWD_JOINS_PER_HOUR"):
        load_settings({"CROWD_JOINS_PER_HOUR": "many"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_hour_window_refuses_the_21st_and_says_in_minutes_when_to_retry():
    clock = Clock()
    rate = RateLimiter(clock)
    for _ in range(20):
        rate.hit("join:1.2.3.4", 20, "new volunteers from your network", window_s=3600)
        clock.now += 60  # one a minute: the 21st comes after 20 minutes
    with pytest.raises(Refused) as info:
        rate.hit("join:1.2.3.4", 20, "new volunteers from your network", window_s=3600)
    assert str(info.value) == (
        "Too many new volunteers from your network in an hour (limit 20); try again in 40 minutes."
    )
    assert info.value.retry_after_s == pytest.approx(2400)
    rate.hit("join:5.6.7.8", 20, "new volunteers from your network", window_s=3600)  # another
    clock.now += 2400  # the first join left the window
    rate.hit("join:1.2.3.4", 20, "new volunteers from your network", window_s=3600)


def test_a_refused_hit_is_not_recorded_and_the_minute_window_reads_as_before():
    clock = Clock()
    rate = RateLimiter(clock)
    rate.hit("k", 1, "messages")
    for _ in range(5):  # refusals must not extend the wait
        with pytest.raises(Refused, match=r"in a minute \(limit 1\); try again in 60 s"):
            rate.hit("k", 1, "messages")
    clock.now += 60
    rate.hit("k", 1, "messages")


def test_the_app_refuses_to_start_with_a_malformed_trusted_proxies(tmp_path):
    env = {**os.environ, "CROWD_DATA_DIR": str(tmp_path), "CROWD_TRUSTED_PROXIES": "10.0.0.0/8,x"}
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "CROWD_TRUSTED_PROXIES='10.0.0.0/8,x' is not valid: 'x' is not an IP" in done.stderr
    assert not (tmp_path / "crowd.db").exists()  # refused before anything was written
