"""Password rules and hashing: passwords are stored only as salted scrypt hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import cache

from assistant.errors import InvalidInput

MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH = 12, 1024
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    data = password.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=length)


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` (base64 salt and hash); the password is validated first."""
    validate_password(password)
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, 32)
    encoded = [base64.b64encode(value).decode() for value in (salt, digest)]
    return "$".join(["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), *encoded])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        want = base64.b64decode(expected, validate=True)
        got = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p), 32)
    except ValueError:  # a malformed stored hash (binascii.Error is a ValueError too)
        return False
    return scheme == "scrypt" and hmac.compare_digest(got, want)


@cache
def dummy_hash() -> str:
    """Checked against for unknown users, so timing does not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))
