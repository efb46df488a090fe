from crowd.trust import Tally, TrustRule, consensus


def t(endorse: float, reject: float, confirmed: str | None = None) -> Tally:
    """A tally of unweighted reviews (each counting review weighs 1)."""
    return Tally(endorse, reject, int(endorse + reject), confirmed)


def test_the_trust_rule_needs_enough_reviews_then_follows_their_balance():
    rule = TrustRule(on=True, min_reviews=2)
    assert rule.status(t(0, 0)) == "unreviewed"
    assert rule.status(t(1, 0)) == "pending"
    assert rule.status(t(2, 0)) == "trusted" and rule.status(t(2, 1)) == "trusted"
    assert rule.status(t(0, 2)) == "rejected" and rule.status(t(1, 2)) == "rejected"
    assert rule.status(t(1, 1)) == "contested"
    assert rule.trains(t(0, 0)) and rule.trains(t(1, 0)) and rule.trains(t(3, 1))
    assert not rule.trains(t(0, 2)) and not rule.trains(t(1, 1))  # rejected, contested
    assert rule.judges(t(2, 0)) and not rule.judges(t(0, 0)) and not rule.judges(t(1, 1))
    assert consensus("trusted") == "endorse" and consensus("contested") is None
    # weights: a rejection that weighs little does not outvote an endorsement
    assert rule.status(Tally(1.0, 0.4, 2)) == "trusted"
    # the organizer's verdict decides, whatever the reviews
    assert rule.status(t(0, 3, "endorse")) == "trusted"
    assert rule.status(t(0, 0, "reject")) == "rejected"


def test_held_unreviewed_corrections_wait_for_independent_endorsement():
    rule = TrustRule(on=True, min_reviews=2, hold_unreviewed=True)
    assert not rule.trains(t(0, 0)) and not rule.trains(t(1, 0))
    assert rule.trains(t(2, 0)) and not rule.trains(t(1, 1))


def test_with_reviews_off_everything_trains_and_judges_as_before():
    rule = TrustRule(on=False)
    assert rule.trains(t(0, 5)) and rule.judges(t(0, 0)) and rule.judges(t(0, 5))


def test_the_cap_keeps_a_flooders_share_at_a_quarter():
    from crowd.trust import capped

    owners = ["flood"] * 30 + ["a", "b", "c", "d"] * 3
    keep = capped(owners, 0.25)
    used = [o for o, k in zip(owners, keep) if k]
    assert used.count("flood") == 4 and len(used) == 16  # 25 %: 4 of 16
    assert keep[:4] == [True] * 4 and not any(keep[4:30])  # the oldest four count
    assert all(keep[30:])  # honest people lose nothing


def test_the_cap_spares_a_small_honest_group_and_does_nothing_at_one():
    from crowd.trust import capped

    assert all(capped(["a", "b", "c"] * 3, 0.25))  # three equals: the median rule keeps all
    assert all(capped(["solo"] * 5, 0.25))  # nobody else to compare with
    assert all(capped(["x"] * 9 + ["y"], 1.0))
    two = capped(["flood"] * 30 + ["a"] * 3, 0.25)
    assert sum(two[:30]) == 3 and all(two[30:])  # no more than the other member's count


def test_items_dealt_in_turns_keep_each_owners_share_in_every_first_part():
    from crowd.trust import in_turns

    owners = ["ring"] * 4 + ["a", "b"] * 2 + ["c"]
    order = in_turns(owners)
    assert sorted(order) == list(range(len(owners)))  # a permutation: nothing lost or doubled
    assert [owners[i] for i in order] == ["ring", "a", "b", "c", "ring", "a", "b", "ring", "ring"]
    assert order[:2] == [0, 4] and order[4] == 1  # each owner's items stay oldest first
    assert in_turns([]) == [] and in_turns(["x", "x"]) == [0, 1]


def test_a_person_whose_reviewed_corrections_are_mostly_rejected_trains_nothing_that_round():
    from crowd.trust import bad_standing, training_corrections

    def c(i: int, person: str, split: str = "train") -> dict:
        return {"id": i, "participant_id": person, "split": split, "group_index": 0}

    # A ring member: one correction endorsed by a partner (2-1), two rejected, one unreviewed.
    # An honest volunteer: two trusted, one rejected by bad luck. A newcomer: one rejected.
    corrections = [c(1, "ring"), c(2, "ring"), c(3, "ring", "heldout"), c(4, "ring")]
    corrections += [c(5, "honest"), c(6, "honest"), c(7, "honest"), c(8, "new")]
    counts = {
        i: t(*c)
        for i, c in {
            1: (2, 1),
            2: (0, 2),
            3: (1, 2),
            5: (2, 0),
            6: (3, 0),
            7: (1, 2),
            8: (0, 2),
        }.items()
    }
    rule = TrustRule(on=True, min_reviews=2)
    assert bad_standing(corrections, counts, rule) == {"ring"}  # the newcomer: too few decided
    used = [x["id"] for x in training_corrections(corrections, counts, rule, share=1.0)]
    assert used == [5, 6]  # the ring's trusted and unreviewed ones too are out
    assert bad_standing(corrections, counts, TrustRule(on=False)) == set()
    everything = training_corrections(corrections, counts, TrustRule(on=False), share=1.0)
    assert [x["id"] for x in everything] == [1, 2, 4, 5, 6, 7, 8]


def test_standing_and_the_cap_are_per_voice():
    from crowd.trust import bad_standing, training_corrections

    def c(i: int, person: str) -> dict:
        return {"id": i, "participant_id": person, "split": "train", "group_index": 0}

    # twenty pseudonyms of one network, one item each, three of them rejected: one voice
    puppets = [c(i, f"puppet{i}") for i in range(20)]
    honest = [c(100 + i, f"honest{i}") for i in range(6)]
    counts = {i: t(0, 2) for i in range(3)}
    rule = TrustRule(on=True, min_reviews=2)

    def voice(person: str) -> str:
        return "net:ring" if person.startswith("puppet") else person

    assert bad_standing(puppets + honest, counts, rule) == set()  # per pseudonym: nobody
    assert bad_standing(puppets + honest, counts, rule, voice) == {"net:ring"}
    no_reviews = {}
    per_pseudonym = training_corrections(puppets + honest, no_reviews, rule, 0.25)
    per_voice = training_corrections(puppets + honest, no_reviews, rule, 0.25, voice)
    assert (
        sum(x["participant_id"].startswith("puppet") for x in per_pseudonym) == 20
    )  # nobody capped
    assert sum(x["participant_id"].startswith("puppet") for x in per_voice) == 2  # 25 %: 2 of 8


def test_a_reviewer_who_gets_gold_wrong_weighs_less():
    from crowd.trust import MAX_WEIGHT, gold_weight

    assert gold_weight(0, 0) == 1.0  # no gold answers yet: a full voice
    assert gold_weight(0, 1) < 0.5 and gold_weight(0, 2) < 0.15 and gold_weight(0, 3) == 0.0
    assert gold_weight(4, 0) > 1.5 and gold_weight(50, 0) == MAX_WEIGHT
    assert gold_weight(9, 1) > gold_weight(0, 0)  # honest noise costs little


def test_a_voice_counts_once_per_correction_and_only_when_independent():
    from crowd.trust import tallies

    reviews = [
        (1, "a1", "endorse"),
        (1, "a2", "endorse"),
        (1, "b", "reject"),
        (1, "self", "endorse"),
    ]
    found = tallies(
        reviews,
        counts=lambda cid, reviewer: reviewer != "self",
        weight=lambda reviewer: 0.5 if reviewer == "b" else 1.0,
        confirmed={2: "reject"},
        voice=lambda reviewer: reviewer.rstrip("0123456789"),
    )
    assert found[1] == Tally(1.0, 0.5, 2) and found[2].confirmed == "reject"
