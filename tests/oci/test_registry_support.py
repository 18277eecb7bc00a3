"""The test registry's own parts: bcrypt for htpasswd (checked against published vectors)."""

from __future__ import annotations

import pytest

from tests.support.registry import bcrypt_check, bcrypt_hash

# crypt_blowfish's test vectors (also used by OpenBSD and libxcrypt)
VECTORS = [
    ("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"),
    ("$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK", "U*U*"),
    ("$2a$05$XXXXXXXXXXXXXXXXXXXXXOAcXxm9kjPGEMsLznoKqmqw7tc8WCx4a", "U*U*U"),
    ("$2a$05$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui",
     "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
     "chars after 72 are ignored"),
]


@pytest.mark.parametrize(("hashed", "password"), VECTORS)
def test_pure_python_bcrypt_matches_the_published_vectors(hashed: str, password: str) -> None:
    assert bcrypt_check(password, hashed)
    assert not bcrypt_check("#" + password[1:], hashed)


def test_generated_hashes_are_salted_and_verify() -> None:
    first, second = bcrypt_hash("pw"), bcrypt_hash("pw")
    assert first != second and first.startswith("$2b$04$") and len(first) == 60
    assert bcrypt_check("pw", first) and bcrypt_check("pw", second)
