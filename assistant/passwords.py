"""Password rules and hashing: passwords are stored only as salted scrypt hashes.

Besides the length, a password must not be easy to guess: zxcvbn (its frequency lists of
common passwords, words and names ship inside the package, offline) estimates the guesses
needed, and common, repetitive or sequential passwords score too low."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from functools import cache

from zxcvbn import zxcvbn

from assistant.errors import InvalidInput

MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH = 12, 1024
# zxcvbn's score 3: about 10^8 guesses or more ("password1234" scores 1, "aaaaaaaaaaaa" 0).
MIN_PASSWORD_SCORE = 3
# zxcvbn refuses longer input; a strong prefix makes a strong password.
STRENGTH_CHECKED_CHARS = 72
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    data = password.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=length)


def validate_password(password: str, user_inputs: Sequence[str] = ()) -> None:
    """Length, then guessability; `user_inputs` (the user name, say) count as guessable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")
    checked = password[:STRENGTH_CHECKED_CHARS]
    result = zxcvbn(checked, user_inputs=list(user_inputs), max_length=STRENGTH_CHECKED_CHARS)
    if result["score"] < MIN_PASSWORD_SCORE:
        why = result["feedback"]["warning"] or "It is common, repetitive or sequential."
        raise InvalidInput(
            f"this password is too easy to guess. {why} "
            "Use a few uncommon words, or a longer mix of letters, digits and symbols"
        )


def hash_password(password: str, user_inputs: Sequence[str] = ()) -> str:
    """`scrypt$n$r$p$salt$hash` (base64 salt and hash); the password is validated first."""
    validate_password(password, user_inputs)
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
