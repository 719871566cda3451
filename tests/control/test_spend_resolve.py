"""Which cap applies: user override, most restrictive group, org default, unlimited; plus key caps."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ccledger.control.spend import UNLIMITED, CapTable, EffectiveCap, SpendLimit, resolve_caps


def cap(id_: str, scope: str, scope_id: str | None, period: str, cents: str | None) -> SpendLimit:
    return SpendLimit(id_, scope, scope_id, period, None if cents is None else Decimal(cents))


LIMITS = [
    cap("spl_org_d", "organization", None, "daily", "5000"),
    cap("spl_org_m", "organization", None, "monthly", "50000"),
    cap("spl_eng_d", "rbac_group", "eng", "daily", "3000"),
    cap("spl_ml_d", "rbac_group", "ml", "daily", "8000"),
    cap("spl_ml_w", "rbac_group", "ml", "weekly", None),
    cap("spl_ann_d", "user", "ann", "daily", "100"),
    cap("spl_bob_m", "user", "bob", "monthly", None),
    cap("spl_key_d", "api_key", "k1", "daily", "700"),
]


def test_user_override_wins() -> None:
    caps = resolve_caps(LIMITS, "ann", ["eng", "ml"])
    assert caps["daily"] == EffectiveCap(Decimal("100"), "user", "spl_ann_d")


def test_most_restrictive_group_then_org_then_unlimited() -> None:
    caps = resolve_caps(LIMITS, "carl", ["ml", "eng"])
    assert caps["daily"] == EffectiveCap(Decimal("3000"), "rbac_group", "spl_eng_d")
    # "ml" has an explicit unlimited weekly row: the group level wins over (absent) org weekly.
    assert caps["weekly"] == EffectiveCap(None, "rbac_group", "spl_ml_w")
    assert caps["monthly"] == EffectiveCap(Decimal("50000"), "organization", "spl_org_m")
    assert set(caps) == {"daily", "weekly", "monthly"}


def test_group_max_mode_picks_least_restrictive() -> None:
    caps = resolve_caps(LIMITS, "carl", ["eng", "ml"], group_limit_mode="max")
    assert caps["daily"].limit_id == "spl_ml_d"
    assert resolve_caps(LIMITS, "carl", ["ml"], group_limit_mode="max")["weekly"].amount_cents is None


def test_unlimited_group_row_loses_to_a_capped_group_in_min_mode() -> None:
    limits = [*LIMITS, cap("spl_eng_w", "rbac_group", "eng", "weekly", "9000")]
    assert resolve_caps(limits, "carl", ["ml", "eng"])["weekly"].limit_id == "spl_eng_w"


def test_org_default_and_nothing_at_all() -> None:
    caps = resolve_caps(LIMITS, "dora", [])
    assert caps["daily"].source_type == "organization"
    assert caps["weekly"] == UNLIMITED


def test_user_unlimited_override_exempts_from_org_default() -> None:
    assert resolve_caps(LIMITS, "bob", [])["monthly"] == EffectiveCap(None, "user", "spl_bob_m")


def test_key_caps_are_separate_and_do_not_inherit_defaults() -> None:
    caps = resolve_caps(LIMITS, "ann", ["eng"], key_id="k1")
    assert caps.key["daily"] == EffectiveCap(Decimal("700"), "api_key", "spl_key_d")
    assert caps.key["monthly"] == UNLIMITED
    assert caps["daily"].limit_id == "spl_ann_d"
    assert resolve_caps(LIMITS, "ann", [], key_id="k2").key["daily"] == UNLIMITED


def test_cap_nanos_is_exact() -> None:
    assert EffectiveCap(Decimal("1")).cap_nanos == 10_000_000  # one cent
    assert EffectiveCap(Decimal("0")).cap_nanos == 0
    assert UNLIMITED.cap_nanos is None


def test_validation() -> None:
    with pytest.raises(ValueError):
        cap("x", "team", "t", "daily", "1")
    with pytest.raises(ValueError):
        cap("x", "user", "u", "hourly", "1")
    with pytest.raises(ValueError):
        cap("x", "organization", "o", "daily", "1")
    with pytest.raises(ValueError):
        cap("x", "user", None, "daily", "1")
    with pytest.raises(ValueError):
        cap("x", "user", "u", "daily", "-1")
    with pytest.raises(ValueError):
        CapTable([LIMITS[0], cap("dup", "organization", None, "daily", "1")])
    with pytest.raises(ValueError):
        CapTable(LIMITS, group_limit_mode="avg")
