"""Signs every CSR in a `csrd batch` output (JSONL) with a throw-away local CA, as a
customer's CA would, and writes `csrd batch --certificates` input: one
{"custom_csr_id", "certificate"} per line (leaf, then the CA). Needs `cryptography`.

    python3 sign_csrs.py <batch-output.jsonl> <certificates.jsonl>
"""

import datetime
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def main(src, dst):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "csrd bench CA"),
        x509.NameAttribute(NameOID.COMMON_NAME, "csrd bench CA root"),
    ])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    n = 0
    with open(src) as inp, open(dst, "w") as out:
        for line in inp:
            made = json.loads(line)
            if "csr" not in made:
                continue
            csr = x509.load_pem_x509_csr(made["csr"].encode())
            builder = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(name)
                       .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(days=1))
                       .not_valid_after(now + datetime.timedelta(days=90)))
            for ext in csr.extensions:
                builder = builder.add_extension(ext.value, ext.critical)
            leaf = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
            out.write(json.dumps({"custom_csr_id": made["id"], "certificate": leaf + ca_pem}) + "\n")
            n += 1
    print(f"signed {n}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
