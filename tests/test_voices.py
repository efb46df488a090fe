"""Sources and voices (issue 26): how an address becomes a source, how pseudonyms that share
sources become one voice, venues, the limits that count per source, and a classroom behind
one address declared as a venue. Real SQLite; the service without a model where none is needed,
the tiny model where corrections need replies."""

from __future__ import annotations

import pytest

from crowd.limits import Refused
from crowd.voices import network_source, parse_venues, voices_of
from tests.apps import KEY


def test_an_address_becomes_its_network():
    assert network_source("203.0.113.7") == "net:203.0.113.0/24"
    assert network_source("203.0.113.250:4431") == "net:203.0.113.0/24"
    assert network_source("::ffff:203.0.113.9") == "net:203.0.113.0/24"  # dual-stack socket
    assert network_source("2001:db8:0:12ab::5") == "net:2001:db8:0:1200::/56"
    assert network_source("[2001:db8:0:12ff::1]:443") == "net:2001:db8:0:1200::/56"
    assert network_source("2001:db8:0:1300::1") == "net:2001:db8:0:1300::/56"
    assert network_source(None) is None and network_source("unix:/tmp/socket") is None


def test_pseudonyms_that_share_a_network_are_one_voice_transitively():
    sightings = [
        ("a1", "net:198.51.100.0/24"),
        ("a2", "net:198.51.100.0/24"),
        ("a2", "net:203.0.113.0/24"),  # a2 also used another network: it joins them
        ("a3", "net:203.0.113.0/24"),
        ("b", "net:192.0.2.0/24"),
        ("signed", "net:198.51.100.0/24"),
        ("signed", "hf:ada"),
    ]
    voices = voices_of(sightings, accounts={"signed": "ada"})
    assert voices.of("a1") == voices.of("a2") == voices.of("a3") == "net:198.51.100.0/24"
    assert voices.sources["net:198.51.100.0/24"] == {"net:198.51.100.0/24", "net:203.0.113.0/24"}
    assert voices.of("b") == "net:192.0.2.0/24"
    assert voices.of("signed") == "hf:ada", "an account is a voice of its own"
    assert voices.of("never-seen") == "p:never-seen"
    assert voices.members()["net:198.51.100.0/24"] == ["a1", "a2", "a3"]
    assert not voices.independent("a1", "a3") and voices.independent("a1", "b")


def test_in_a_venue_each_person_counts_alone_but_not_independently_of_the_others():
    venue = parse_venues("192.0.2.0/24\n2001:db8:ff00::/40")
    sightings = [("pupil1", "net:192.0.2.0/24"), ("pupil2", "net:192.0.2.0/24")]
    sightings += [("home", "net:198.51.100.0/24"), ("pupil1", "net:198.51.100.0/24")]
    voices = voices_of(sightings, {}, venue)
    assert voices.of("pupil2") == "p:pupil2", "alone in the venue"
    assert voices.of("pupil1") == voices.of("home"), "pupil1's home network still joins"
    assert not voices.independent("pupil1", "pupil2"), "classmates review each other for nothing"
    assert voices.independent("pupil2", "home")


@pytest.mark.parametrize(
    "raw, message",
    [
        ("192.0.2.0/33", "not an IP network"),
        ("classroom", "not an IP network"),
        ("10.0.0.0/8", "broader than a /16"),
        ("2001:db8::/16", "broader than a /32"),
        (["192.0.2.0/24"], "must be text"),
    ],
)
def test_a_bad_venue_is_refused_at_save_with_the_field_named_and_nothing_stored(
    settings, raw, message
):
    from crowd.organizer import Organizer
    from crowd.service import CrowdService

    organizer = Organizer(CrowdService(settings, None))
    with pytest.raises(Refused, match=f"venues: .*{message}.*Nothing was saved"):
        organizer.update_campaign(KEY, venues=raw, name="Renamed")
    campaign, _ = organizer.service.context()
    assert campaign["venues"] == "" and campaign["name"] != "Renamed"
    saved = organizer.update_campaign(KEY, venues=" 192.0.2.7/24, 2001:db8:ff00::/40 ")
    assert saved["venues"] == "192.0.2.0/24\n2001:db8:ff00::/40"


def test_the_join_limit_counts_a_whole_network(settings):
    from crowd.service import CrowdService

    service = CrowdService(settings, None)
    for i in range(20):  # twenty addresses of one /24
        service.join(f"Puppet {i}", True, address=f"203.0.113.{i + 1}")
    with pytest.raises(Refused, match="new volunteers from your network"):
        service.join("Puppet 20", True, address="203.0.113.200")
    service.join("Neighbour", True, address="203.0.114.1")  # the next /24 is another network
    for i in range(20):  # IPv6: one /56 however the last 72 bits change
        service.join(f"Six {i}", True, address=f"2001:db8:0:12{i:02x}::{i + 1}")
    with pytest.raises(Refused, match="new volunteers from your network"):
        service.join("Six 20", True, address="2001:db8:0:12ff::99")


def test_every_action_records_its_source_and_the_account(settings):
    from crowd.service import CrowdService
    from storage import sources

    service = CrowdService(settings, None)
    anon = service.join("Anon", True, address="198.51.100.7")
    signed = service.join("Ada", True, hf_username="ada", address="198.51.100.8")
    service.resume(anon.token)  # no address: a page tick records nothing
    campaign, _ = service.context()
    with service.db() as db:
        seen = sources.sightings(db, campaign["id"])
    assert sorted(seen) == sorted(
        [
            (anon.participant_id, "net:198.51.100.0/24"),
            (signed.participant_id, "net:198.51.100.0/24"),
            (signed.participant_id, "hf:ada"),
        ]
    )


def test_a_classroom_of_30_behind_one_address_declared_a_venue_keeps_working(
    settings, new_generation
):
    from crowd.organizer import Organizer
    from crowd.review import Reviews
    from crowd.rounds.material import training_material
    from crowd.service import CrowdService, context_of
    from storage.db import connect

    generation = new_generation(max_new_tokens=2)
    service = CrowdService(settings, generation)  # the default limits: 120 actions a minute
    organizer, reviews, school = Organizer(service), Reviews(service), {"address": "192.0.2.7"}
    try:
        pupils = [service.join(f"Pupil {i}", True, **school).token for i in range(20)]
        with pytest.raises(Refused, match="new volunteers from your network"):
            service.join("Pupil 20", True, **school)
        organizer.update_campaign(KEY, venues="192.0.2.0/24")  # the teacher declares the room
        pupils += [service.join(f"Pupil {i}", True, **school).token for i in range(20, 30)]
        for round_trip in range(2):
            for token in pupils:  # 180 actions from one address within the minute
                reply = list(service.send(token, None, f"Question {round_trip}", **school))[-1]
                service.rewrite(token, reply.message_id, f"A kind answer {round_trip}.", **school)
        item = reviews.queue(pupils[0], 1, **school)[0]  # classmates' work is still dealt
        reviews.review(pupils[0], item["item_id"], "reject", **school)
        with connect(service.settings.db_path) as db:
            campaign, round_ = context_of(db)
            data, usage = training_material(db, campaign, round_)
        assert sum(len(g.sft) for g in data.values()) == 60, "every pupil counts alone"
        assert all(used == [2, 0] for used in usage.values()) and len(usage) == 30
    finally:
        generation.close()
