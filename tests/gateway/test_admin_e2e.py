"""The admin API inside the real gateway: a cap set over HTTP is enforced on the next request."""

from __future__ import annotations

import httpx

from tests.gateway.conftest import ADMIN_READ, ADMIN_WRITE, RunningGateway, body

BASE = "/v1/organizations/spend_limits"


def test_cap_set_over_admin_api_is_enforced(gw: RunningGateway) -> None:
    key = gw.user("alice", groups=("eng",))
    with httpx.Client(base_url=gw.url, timeout=30) as admin:
        assert gw.client(key).post("/v1/messages", content=body()).status_code == 200
        denied = admin.post(
            BASE, headers={"x-api-key": ADMIN_READ},
            json={"scope": {"type": "rbac_group", "rbac_group_id": "eng"}, "amount": "0", "period": "daily"},
        )  # fmt: skip
        assert denied.status_code == 403 and denied.headers["request-id"]
        made = admin.post(
            BASE, headers={"x-api-key": ADMIN_WRITE},
            json={"scope": {"type": "rbac_group", "rbac_group_id": "eng"}, "amount": "0", "period": "daily"},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        gw.refresh()  # what the periodic limits poll (or on_limits_changed) does
        blocked = gw.client(key).post("/v1/messages", content=body())
        assert blocked.status_code == 429
        assert blocked.json()["error"]["type"] == "billing_error"

        gw.flush()
        eff = admin.get(
            f"{BASE}/effective",
            headers={"x-api-key": ADMIN_READ},
            params={"user_ids[]": "alice", "period[]": "daily"},
        )
        assert eff.status_code == 200, eff.text
        (row,) = eff.json()["data"]
        assert row["amount"] == "0" and row["source"] == {"type": "rbac_group"}
        assert row["spend_limit_id"] == made.json()["id"]
        assert row["actor"]["email_address"] == "alice@example.com"
        assert float(row["period_to_date_spend"]) > 0  # the first request's cost
