// The official Cloudflare TypeScript SDK (npm `cloudflare`, pinned in package.json) against a
// csrd that tests/api/compat.rs started: custom CSRs, then custom certificates with
// `custom_csr_id`, signed by a throw-away local CA (openssl). Run with `node --test`.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import Cloudflare from 'cloudflare';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through scripts/test`);
  return value;
}

const zone = env('CSRD_ZONE');
const account = env('CSRD_ACCOUNT');
const cf = new Cloudflare({
  baseURL: `${env('CSRD_BASE_URL')}/client/v4`,
  apiToken: env('CSRD_TOKEN'),
  maxRetries: 0,
});

const BODY = {
  common_name: 'ts.acme-widgets.io',
  country: 'US',
  state: 'California',
  locality: 'San Francisco',
  organization: 'Acme Widgets',
  sans: ['ts.acme-widgets.io'],
  key_type: 'p256v1',
};

let dir;
const openssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' });

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'csrd-ts-ca-'));
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-days', '3650', '-subj', '/O=TS Test CA/CN=TS Test CA root',
    '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'));
});

// The leaf (copying the CSR's SANs) followed by the CA: leaf first, as Cloudflare wants.
function sign(csrPem) {
  writeFileSync(join(dir, 'leaf.csr'), csrPem);
  openssl('x509', '-req', '-in', join(dir, 'leaf.csr'), '-CA', join(dir, 'ca.pem'),
    '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-days', '90',
    '-copy_extensions', 'copy', '-out', join(dir, 'leaf.pem'));
  return readFileSync(join(dir, 'leaf.pem'), 'utf8') + readFileSync(join(dir, 'ca.pem'), 'utf8');
}

async function errorOf(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail('the call was expected to fail');
}

test('custom CSRs: create, get, list (auto-paginated), delete, zone and account', async () => {
  for (const scope of [{ zone_id: zone }, { account_id: account }]) {
    const made = await cf.customCsrs.create({ ...scope, ...BODY });
    assert.ok(made.id);
    assert.equal(made.key_type, 'p256v1');
    assert.match(made.csr, /^-----BEGIN CERTIFICATE REQUEST-----/);
    assert.deepEqual(made.sans, BODY.sans);

    const got = await cf.customCsrs.get(made.id, scope);
    assert.equal(got.id, made.id);
    assert.equal(got.csr, made.csr);

    const ids = [];
    for await (const csr of cf.customCsrs.list({ ...scope, per_page: 5 })) ids.push(csr.id);
    assert.ok(ids.includes(made.id));
    assert.equal(ids.length, new Set(ids).size);

    const deleted = await cf.customCsrs.delete(made.id, scope);
    assert.equal(deleted.id, made.id);
    const gone = await errorOf(cf.customCsrs.get(made.id, scope));
    assert.ok(gone instanceof Cloudflare.NotFoundError, String(gone));
  }
});

test('custom certificates with custom_csr_id: create, get, list, edit, 1420, delete', async () => {
  const csr = await cf.customCsrs.create({ zone_id: zone, ...BODY });
  const made = await cf.customCertificates.create({
    zone_id: zone,
    certificate: sign(csr.csr),
    custom_csr_id: csr.id,
    bundle_method: 'force',
  });
  assert.ok(made.id);
  assert.equal(made.zone_id, zone);
  assert.deepEqual(made.hosts, ['ts.acme-widgets.io']);
  assert.equal(made.issuer, 'TS Test CA');
  assert.equal(made.status, 'active');
  assert.equal(made.bundle_method, 'force');
  assert.equal(made.custom_csr_id, csr.id);
  assert.ok(made.expires_on && made.uploaded_on);

  const got = await cf.customCertificates.get(made.id, { zone_id: zone });
  assert.equal(got.id, made.id);
  assert.deepEqual(got.hosts, made.hosts);

  const ids = [];
  for await (const c of cf.customCertificates.list({ zone_id: zone, per_page: 5 })) ids.push(c.id);
  assert.ok(ids.includes(made.id));
  assert.equal(ids.length, new Set(ids).size);

  const edited = await cf.customCertificates.edit(made.id, {
    zone_id: zone,
    bundle_method: 'optimal',
  });
  assert.equal(edited.id, made.id);
  assert.equal(edited.bundle_method, 'optimal');

  // The CSR's key is in use: Cloudflare's 409/1420.
  const conflict = await errorOf(cf.customCsrs.delete(csr.id, { zone_id: zone }));
  assert.ok(conflict instanceof Cloudflare.ConflictError, String(conflict));
  assert.equal(conflict.errors[0].code, 1420);

  const deleted = await cf.customCertificates.delete(made.id, { zone_id: zone });
  assert.equal(deleted.id, made.id);
  const gone = await errorOf(cf.customCertificates.get(made.id, { zone_id: zone }));
  assert.ok(gone instanceof Cloudflare.NotFoundError, String(gone));
  assert.equal((await cf.customCsrs.delete(csr.id, { zone_id: zone })).id, csr.id);
});

test('a certificate for another key and a pasted private key are refused with their codes', async () => {
  const mine = await cf.customCsrs.create({ zone_id: zone, ...BODY });
  const other = await cf.customCsrs.create({
    zone_id: zone,
    ...BODY,
    common_name: 'other.acme-widgets.io',
  });
  const mismatch = await errorOf(cf.customCertificates.create({
    zone_id: zone,
    certificate: sign(other.csr),
    custom_csr_id: mine.id,
  }));
  assert.ok(mismatch instanceof Cloudflare.BadRequestError, String(mismatch));
  assert.equal(mismatch.errors[0].code, 1429);

  const keyed = await errorOf(cf.customCertificates.create({
    zone_id: zone,
    certificate: sign(mine.csr),
    custom_csr_id: mine.id,
    private_key: '-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n',
  }));
  assert.ok(keyed instanceof Cloudflare.BadRequestError, String(keyed));
  assert.equal(keyed.errors[0].code, 1440);
});
