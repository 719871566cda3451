"""Team-size recommendations: the table as data, boundary rule, worked example, peak events."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

import pytest

from ccledger.control.plan import BANDS, band_index, recommend


def test_worked_example_200_users() -> None:
    plan = recommend(200)
    assert plan.tpm_per_user == 20_000
    assert plan.org_tpm == 200 * 20_000 == 4_000_000
    assert (plan.tpm_per_user_low, plan.tpm_per_user_high) == (15_000, 20_000)
    assert (plan.rpm_per_user_low, plan.rpm_per_user_high) == (Decimal("0.37"), Decimal("0.47"))
    assert plan.rpm_per_user == Decimal("0.47")
    assert plan.org_rpm == 200 * Decimal("0.47") == Decimal("94")
    assert plan.band.label == "100-500"


@pytest.mark.parametrize(
    ("users", "label"),
    [
        (1, "1-5"),
        (5, "1-5"),
        (6, "5-20"),
        (20, "5-20"),  # a boundary size uses the smaller-team (more generous) row
        (21, "20-50"),
        (50, "20-50"),
        (100, "50-100"),
        (101, "100-500"),
        (500, "100-500"),
        (501, "500+"),
        (10_000, "500+"),
    ],
)
def test_band_boundaries(users: int, label: str) -> None:
    assert BANDS[band_index(users)].label == label
    assert recommend(users).band.label == label


def test_allocation_never_grows_per_user_with_team_size() -> None:
    plans = [recommend(n) for n in range(1, 1200)]
    assert all(a.tpm_per_user >= b.tpm_per_user for a, b in pairwise(plans))
    assert all(a.rpm_per_user >= b.rpm_per_user for a, b in pairwise(plans))


def test_peak_event_uses_the_next_smaller_band() -> None:
    peak = recommend(200, peak_event=True)
    assert peak.peak_event and peak.band.label == "50-100"
    assert peak.tpm_per_user == 35_000 and peak.org_tpm == 200 * 35_000
    assert peak.rpm_per_user == Decimal("0.87")


def test_peak_event_in_the_smallest_band_doubles() -> None:
    peak = recommend(3, peak_event=True)
    assert peak.tpm_per_user == 2 * 300_000 and peak.rpm_per_user == 2 * 7


@pytest.mark.parametrize("users", [1, 5, 6, 20, 50, 99, 200, 500, 501, 5000])
def test_peak_event_always_raises_the_allocation(users: int) -> None:
    normal, peak = recommend(users), recommend(users, peak_event=True)
    assert peak.tpm_per_user > normal.tpm_per_user and peak.rpm_per_user > normal.rpm_per_user


def test_team_must_have_users() -> None:
    with pytest.raises(ValueError):
        recommend(0)
