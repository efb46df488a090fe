from crowd.trust import TrustRule, consensus


def test_the_trust_rule_needs_enough_reviews_then_follows_their_balance():
    rule = TrustRule(on=True, min_reviews=2)
    assert rule.status(0, 0) == "unreviewed"
    assert rule.status(1, 0) == "pending"
    assert rule.status(2, 0) == "trusted" and rule.status(2, 1) == "trusted"
    assert rule.status(0, 2) == "rejected" and rule.status(1, 2) == "rejected"
    assert rule.status(1, 1) == "contested"
    assert rule.trains(1, 0) and rule.trains(1, 1) and not rule.trains(0, 2)
    assert rule.judges(2, 0) and not rule.judges(0, 0) and not rule.judges(1, 1)
    assert consensus("trusted") == "endorse" and consensus("contested") is None


def test_with_reviews_off_everything_trains_and_judges_as_before():
    rule = TrustRule(on=False)
    assert rule.trains(0, 5) and rule.judges(0, 0) and rule.judges(0, 5)
