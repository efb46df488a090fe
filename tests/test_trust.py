from crowd.trust import TrustRule, consensus


def test_the_trust_rule_needs_enough_reviews_then_follows_their_balance():
    rule = TrustRule(on=True, min_reviews=2)
    assert rule.status(0, 0) == "unreviewed"
    assert rule.status(1, 0) == "pending"
    assert rule.status(2, 0) == "trusted" and rule.status(2, 1) == "trusted"
    assert rule.status(0, 2) == "rejected" and rule.status(1, 2) == "rejected"
    assert rule.status(1, 1) == "contested"
    assert rule.trains(0, 0) and rule.trains(1, 0) and rule.trains(3, 1)
    assert not rule.trains(0, 2) and not rule.trains(1, 1)  # rejected, contested
    assert rule.judges(2, 0) and not rule.judges(0, 0) and not rule.judges(1, 1)
    assert consensus("trusted") == "endorse" and consensus("contested") is None


def test_with_reviews_off_everything_trains_and_judges_as_before():
    rule = TrustRule(on=False)
    assert rule.trains(0, 5) and rule.judges(0, 0) and rule.judges(0, 5)


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


def test_a_person_whose_reviewed_corrections_are_mostly_rejected_trains_nothing_that_round():
    from crowd.trust import bad_standing, training_corrections

    def c(i: int, person: str, split: str = "train") -> dict:
        return {"id": i, "participant_id": person, "split": split, "group_index": 0}

    # A ring member: one correction endorsed by a partner (2-1), two rejected, one unreviewed.
    # An honest volunteer: two trusted, one rejected by bad luck. A newcomer: one rejected.
    corrections = [c(1, "ring"), c(2, "ring"), c(3, "ring", "heldout"), c(4, "ring")]
    corrections += [c(5, "honest"), c(6, "honest"), c(7, "honest"), c(8, "new")]
    counts = {1: (2, 1), 2: (0, 2), 3: (1, 2), 5: (2, 0), 6: (3, 0), 7: (1, 2), 8: (0, 2)}
    rule = TrustRule(on=True, min_reviews=2)
    assert bad_standing(corrections, counts, rule) == {"ring"}  # the newcomer: too few decided
    used = [x["id"] for x in training_corrections(corrections, counts, rule, share=1.0)]
    assert used == [5, 6]  # the ring's trusted and unreviewed ones too are out
    assert bad_standing(corrections, counts, TrustRule(on=False)) == set()
    everything = training_corrections(corrections, counts, TrustRule(on=False), share=1.0)
    assert [x["id"] for x in everything] == [1, 2, 4, 5, 6, 7, 8]
