"""Team-size rate-limit recommendations (rate-limits.md §1, from Anthropic's Claude Code cost docs).

Per-user allowances shrink as teams grow because fewer developers run Claude Code at the same moment;
limits are pooled at the org level, so the org total is users × the per-user figure and a developer can
burst past their share while colleagues are idle (``control.ratelimit`` implements that pool).

Choices the source leaves open, and ours:

* **Overlapping boundaries** (5, 20, 50, 100, 500 each appear in two rows): a team of exactly N uses the
  row whose range *ends* at N, i.e. the smaller-team row, which is the more generous one. Why: at the
  boundary the smaller row is equally valid per the table, and under-provisioning (429s mid-task) costs
  more than a slightly larger quota request. So 5 → "1-5", 20 → "5-20", 500 → "100-500", 501 → "500+".
* **Suggested figure**: the high end of the row's range, which is what the source's worked example uses
  (200 users → 20k TPM each = 4,000,000 TPM).
* **Peak events** (live training, hackathons): the source says only "plan for a higher TPM allocation".
  We use the next-smaller team band's figures (one row up, roughly 1.3–2× per user); the smallest band
  has no row above, so its figures are doubled (the typical step between rows).
* "TPM" is not split into input/output by the source; ``control.ratelimit`` meters input + cache writes
  + output against it, matching how Anthropic's ITPM ignores cache reads.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec


class Band(msgspec.Struct, frozen=True):
    """One row of the table: teams of up to ``max_users`` (None: no upper end)."""

    max_users: int | None
    tpm_low: int
    tpm_high: int
    rpm_low: Decimal
    rpm_high: Decimal
    label: str

    def scaled(self, factor: int) -> Band:
        return Band(
            self.max_users,
            self.tpm_low * factor,
            self.tpm_high * factor,
            self.rpm_low * factor,
            self.rpm_high * factor,
            f"{self.label} x{factor}",
        )


BANDS: tuple[Band, ...] = (
    Band(5, 200_000, 300_000, Decimal("5"), Decimal("7"), "1-5"),
    Band(20, 100_000, 150_000, Decimal("2.5"), Decimal("3.5"), "5-20"),
    Band(50, 50_000, 75_000, Decimal("1.25"), Decimal("1.75"), "20-50"),
    Band(100, 25_000, 35_000, Decimal("0.62"), Decimal("0.87"), "50-100"),
    Band(500, 15_000, 20_000, Decimal("0.37"), Decimal("0.47"), "100-500"),
    Band(None, 10_000, 15_000, Decimal("0.25"), Decimal("0.35"), "500+"),
)
PEAK_SMALLEST_FACTOR = 2


def band_index(users: int) -> int:
    """The row for a team of ``users`` (a boundary size belongs to the smaller-team row)."""
    if users < 1:
        raise ValueError("a team has at least one user")
    for i, band in enumerate(BANDS):
        if band.max_users is None or users <= band.max_users:
            return i
    raise AssertionError("the last band is open-ended")


class Plan(msgspec.Struct, frozen=True):
    """Recommended limits for a team; ``tpm_per_user``/``rpm_per_user`` are the suggested figures and
    ``org_tpm``/``org_rpm`` the pooled totals to request (users × suggestion)."""

    users: int
    peak_event: bool
    band: Band  # the row whose figures are used (after the peak adjustment)
    tpm_per_user_low: int
    tpm_per_user_high: int
    rpm_per_user_low: Decimal
    rpm_per_user_high: Decimal
    tpm_per_user: int
    rpm_per_user: Decimal
    org_tpm: int
    org_rpm: Decimal


def recommend(users: int, peak_event: bool = False) -> Plan:
    """Per-user and org-total TPM/RPM for a team of ``users`` (see the module doc for the rules)."""
    i = band_index(users)
    band = BANDS[i]
    if peak_event:
        band = BANDS[i - 1] if i > 0 else band.scaled(PEAK_SMALLEST_FACTOR)
    return Plan(
        users=users,
        peak_event=peak_event,
        band=band,
        tpm_per_user_low=band.tpm_low,
        tpm_per_user_high=band.tpm_high,
        rpm_per_user_low=band.rpm_low,
        rpm_per_user_high=band.rpm_high,
        tpm_per_user=band.tpm_high,
        rpm_per_user=band.rpm_high,
        org_tpm=users * band.tpm_high,
        org_rpm=users * band.rpm_high,
    )
