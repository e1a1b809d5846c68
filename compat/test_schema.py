"""schemathesis against Cloudflare's own OpenAPI document, with csrd as the server.

Checks: no 5xx ever; every 2xx body matches Cloudflare's response schema for the operation;
every 4xx body matches Cloudflare's failure envelope (`api-response-common-failure`), because
the document's own `4XX` schemas combine `success: true` with `success: false` and no body can
satisfy them.
"""

import collections
import itertools
import json
import os

import jsonschema_rs
import pytest
import requests
import schemathesis

SPEC_PATH = os.environ.get("CSRD_SPEC", "")
ACCOUNT, ZONE = os.environ.get("CSRD_ACCOUNT", ""), os.environ.get("CSRD_ZONE", "")
BASE = os.environ.get("CSRD_BASE_URL", "")
HEADERS = {"Authorization": f"Bearer {os.environ.get('CSRD_TOKEN', '')}"}

schema = schemathesis.openapi.from_path(SPEC_PATH)


def openapi30_to_jsonschema(node):
    """OpenAPI 3.0's `nullable: true` becomes JSON Schema's `type: [..., "null"]`."""
    if isinstance(node, dict):
        out = {k: openapi30_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True:
            if "type" in out:
                out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = out["enum"] + [None]
        return out
    if isinstance(node, list):
        return [openapi30_to_jsonschema(v) for v in node]
    return node


with open(SPEC_PATH, encoding="utf-8") as f:
    _document = json.load(f)
_components = openapi30_to_jsonschema(_document["components"])
DECLARED = {(m.upper(), p) for p, item in _document["paths"].items() for m in item if m != "parameters"}
FAILURE = jsonschema_rs.validator_for(
    {"$ref": "#/components/schemas/tls-certificates-and-hostnames_api-response-common-failure", "components": _components}
)


def _make_ids(kind, owner, n):
    ids = []
    for i in range(n):
        body = {
            "common_name": f"st{i}.acme-widgets.io", "country": "US", "state": "CA", "locality": "SF",
            "organization": "Acme", "sans": [f"st{i}.acme-widgets.io"], "key_type": "p256v1",
        }
        r = requests.post(f"{BASE}/client/v4/{kind}/{owner}/custom_csrs", json=body, headers=HEADERS, timeout=30)
        assert r.status_code == 201, r.text
        ids.append(r.json()["result"]["id"])
    return ids


# Real ids so that get and delete also reach their 200 answers: one kept for gets, the rest
# consumed by deletes.
KEPT, DELETABLE = {}, {}
if BASE:
    for _kind, _owner in (("accounts", ACCOUNT), ("zones", ZONE)):
        _ids = _make_ids(_kind, _owner, 60)
        KEPT[_kind], DELETABLE[_kind] = _ids[0], iter(_ids[1:])
COUNTER = itertools.count()
STATS = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def coverage_report():
    """Prints what was exercised and insists every operation reached a success answer."""
    yield
    for key, n in sorted(STATS.items()):
        print(f"  {key[0]:6} {key[1]:60} {key[2]}: {n}")
    # Methods the document does not declare (schemathesis probes them too) answer 405.
    for operation in DECLARED:
        assert any(s < 300 for m, p, s in STATS if (m, p) == operation), f"{operation} never succeeded"
    assert sum(STATS.values()) >= 400, "schemathesis ran fewer cases than expected"


@schema.parametrize()
def test_cloudflare_schema_conformance(case):
    kind = "accounts" if "account_id" in case.path_parameters else "zones"
    case.path_parameters[kind[:-1] + "_id"] = ACCOUNT if kind == "accounts" else ZONE
    # Every other case with a CSR id uses a real one; the rest keep the generated id.
    if "custom_csr_id" in case.path_parameters and next(COUNTER) % 2 == 0:
        real = KEPT[kind] if case.method == "GET" else next(DELETABLE[kind], None)
        if real:
            case.path_parameters["custom_csr_id"] = real

    response = case.call(base_url=BASE + "/client/v4", headers=HEADERS, timeout=60)
    STATS[(case.method, case.operation.path, response.status_code)] += 1
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    body = response.json()
    if response.status_code < 400:
        case.operation.validate_response(response, case=case)
    else:
        errors = list(FAILURE.iter_errors(body))
        assert not errors, f"{response.status_code} body is not a failure envelope: {errors[0]} in {body}"
