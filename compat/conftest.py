"""Settings handed over by the Rust harness (tests/api/compat.rs), which starts csrd with its
own database and AMQP prefix and creates the credentials."""

import os

import pytest


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run these tests through scripts/test", returncode=2)
    return value


@pytest.fixture(scope="session")
def csrd():
    return {
        "base_url": env("CSRD_BASE_URL"),
        "account": env("CSRD_ACCOUNT"),
        "zone": env("CSRD_ZONE"),
        "token": env("CSRD_TOKEN"),
        "read_token": env("CSRD_READ_TOKEN"),
        "email": env("CSRD_EMAIL"),
        "key": env("CSRD_KEY"),
        "spec": env("CSRD_SPEC"),
    }
