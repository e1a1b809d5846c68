"""The official Cloudflare Python SDK uploads, reads, lists, edits and deletes a custom
certificate against a custom CSR csrd made, signed by a throw-away local CA (openssl)."""

import subprocess

import cloudflare
import pytest

BODY = dict(
    common_name="cert.acme-widgets.io",
    country="US",
    state="California",
    locality="San Francisco",
    organization="Acme Widgets",
    sans=["cert.acme-widgets.io"],
    key_type="p256v1",
)


def client(csrd):
    return cloudflare.Cloudflare(
        base_url=csrd["base_url"] + "/client/v4", max_retries=0, api_token=csrd["token"]
    )


def run(*args, **kw):
    subprocess.run(args, check=True, capture_output=True, **kw)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "3650", "-subj", "/O=SDK Test CA/CN=SDK Test CA root",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))

    def sign(csr_pem, days=90):
        (d / "leaf.csr").write_text(csr_pem)
        run("openssl", "x509", "-req", "-in", str(d / "leaf.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", str(days),
            "-copy_extensions", "copy", "-out", str(d / "leaf.pem"))
        return (d / "leaf.pem").read_text() + (d / "ca.pem").read_text()

    return sign


def test_custom_certificate_lifecycle_with_custom_csr_id(csrd, ca):
    cf = client(csrd)
    zone = csrd["zone"]
    csr = cf.custom_csrs.create(zone_id=zone, **BODY)
    chain = ca(csr.csr)

    made = cf.custom_certificates.create(
        zone_id=zone, certificate=chain, custom_csr_id=csr.id, bundle_method="force"
    )
    assert made is not None and made.id
    assert made.zone_id == zone
    assert made.hosts == ["cert.acme-widgets.io"]
    assert made.issuer == "SDK Test CA"
    assert made.status == "active"
    assert made.bundle_method == "force"
    assert made.custom_csr_id == csr.id
    assert made.expires_on is not None and made.uploaded_on is not None

    got = cf.custom_certificates.get(made.id, zone_id=zone)
    assert got.id == made.id and got.hosts == made.hosts

    listed = [c.id for c in cf.custom_certificates.list(zone_id=zone, per_page=5)]
    assert made.id in listed and len(listed) == len(set(listed))

    edited = cf.custom_certificates.edit(made.id, zone_id=zone, bundle_method="optimal")
    assert edited.id == made.id and edited.bundle_method == "optimal"

    # The CSR's key is in use: Cloudflare's 409/1420.
    with pytest.raises(cloudflare.ConflictError) as conflict:
        cf.custom_csrs.delete(csr.id, zone_id=zone)
    assert conflict.value.body["errors"][0]["code"] == 1420

    deleted = cf.custom_certificates.delete(made.id, zone_id=zone)
    assert deleted.id == made.id
    with pytest.raises(cloudflare.NotFoundError):
        cf.custom_certificates.get(made.id, zone_id=zone)
    assert cf.custom_csrs.delete(csr.id, zone_id=zone).id == csr.id


def test_a_certificate_for_another_key_is_refused(csrd, ca):
    cf = client(csrd)
    zone = csrd["zone"]
    mine = cf.custom_csrs.create(zone_id=zone, **BODY)
    other = cf.custom_csrs.create(zone_id=zone, **{**BODY, "common_name": "other.acme-widgets.io"})
    with pytest.raises(cloudflare.BadRequestError) as bad:
        cf.custom_certificates.create(zone_id=zone, certificate=ca(other.csr), custom_csr_id=mine.id)
    assert bad.value.body["errors"][0]["code"] == 1429
    with pytest.raises(cloudflare.BadRequestError) as keyed:
        cf.custom_certificates.create(
            zone_id=zone, certificate=ca(mine.csr), custom_csr_id=mine.id,
            private_key="-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
        )
    assert keyed.value.body["errors"][0]["code"] == 1440
