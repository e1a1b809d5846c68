"""The official Cloudflare Python SDK, pointed at csrd, does the whole custom-CSR lifecycle."""

import cloudflare
import pytest

BODY = dict(
    common_name="sdk.acme-widgets.io",
    country="US",
    state="California",
    locality="San Francisco",
    organization="Acme Widgets",
    sans=["sdk.acme-widgets.io", "*.sdk.acme-widgets.io"],
    key_type="p256v1",
)


def client(csrd, **auth):
    auth = auth or {"api_token": csrd["token"]}
    return cloudflare.Cloudflare(base_url=csrd["base_url"] + "/client/v4", max_retries=0, **auth)


@pytest.mark.parametrize("kind", ["account", "zone"])
def test_create_list_get_delete_then_not_found(csrd, kind):
    cf = client(csrd)
    owner = {f"{kind}_id": csrd[kind]}
    extra = {"name": "sdk", "description": "made by the official SDK"} if kind == "account" else {}

    first = cf.custom_csrs.create(**owner, **BODY, **extra)
    assert first is not None and len(first.id) == 36
    assert first.key_type == "p256v1"
    assert first.csr.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert first.sans == BODY["sans"]
    if kind == "account":
        assert first.account_tag == csrd["account"] and first.name == "sdk"

    made = {first.id}
    for i in range(11):
        made.add(cf.custom_csrs.create(**owner, **{**BODY, "common_name": f"n{i}.acme-widgets.io"}).id)

    # Auto-pagination: the SDK asks for page + 1 until a page comes back empty.
    listed = [c.id for c in cf.custom_csrs.list(**owner, per_page=5)]
    assert len(listed) == len(set(listed)), "no page repeats an item"
    assert made <= set(listed), "no item is skipped"
    page = cf.custom_csrs.list(**owner, per_page=5, page=1)
    assert page.result_info.per_page == 5 and page.result_info.total_count >= 12

    got = cf.custom_csrs.get(first.id, **owner)
    assert got.id == first.id and got.csr == first.csr

    deleted = cf.custom_csrs.delete(first.id, **owner)
    assert deleted.id == first.id
    with pytest.raises(cloudflare.NotFoundError):
        cf.custom_csrs.get(first.id, **owner)
    with pytest.raises(cloudflare.NotFoundError):
        cf.custom_csrs.delete(first.id, **owner)


def test_legacy_email_and_key(csrd):
    cf = client(csrd, api_email=csrd["email"], api_key=csrd["key"])
    made = cf.custom_csrs.create(account_id=csrd["account"], **BODY)
    assert cf.custom_csrs.get(made.id, account_id=csrd["account"]).id == made.id


def test_errors_surface_as_sdk_exceptions(csrd):
    cf = client(csrd)
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.custom_csrs.create(account_id=csrd["account"], **{**BODY, "sans": ["10.0.0.1"]})
    assert bad.value.status_code == 400
    assert bad.value.body["errors"][0]["code"] == 1412

    reader = client(csrd, api_token=csrd["read_token"])
    assert isinstance(list(reader.custom_csrs.list(account_id=csrd["account"])), list)
    with pytest.raises(cloudflare.PermissionDeniedError):
        reader.custom_csrs.create(account_id=csrd["account"], **BODY)

    stranger = client(csrd, api_token="A" * 40)
    with pytest.raises(cloudflare.PermissionDeniedError) as denied:
        stranger.custom_csrs.list(account_id=csrd["account"])
    assert denied.value.body["errors"][0]["code"] == 9109
