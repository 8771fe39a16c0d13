"""Access tokens: made with :func:`secrets.token_urlsafe`, stored only as their sha256.

Roles are ordered: an ``admin`` may do what a ``reviewer`` may, a ``reviewer`` what an ``uploader`` may.
"""

from __future__ import annotations

import hashlib
import secrets

from microzoo.errors import ZooAuthError, ZooError

ROLES = ("uploader", "reviewer", "admin")


def new_token() -> str:
    """A new random token (256 bits, URL-safe text)."""
    return "mz_" + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    """The hex sha256 stored in place of ``token``.

    >>> token_sha256("abc")[:12]
    'ba7816bf8f01'
    """
    return hashlib.sha256(token.encode()).hexdigest()


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else a clear error."""
    if role not in ROLES:
        raise ZooError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def role_allows(held: str, needed: str) -> bool:
    """Whether a token of role ``held`` may do what needs ``needed``.

    >>> role_allows("admin", "reviewer"), role_allows("uploader", "reviewer")
    (True, False)
    """
    return ROLES.index(check_role(held)) >= ROLES.index(check_role(needed))


def require_role(held: str, needed: str) -> None:
    """Raise :class:`ZooAuthError` (403) when ``held`` is below ``needed``."""
    if not role_allows(held, needed):
        raise ZooAuthError(f"this needs a {needed} token; the token given has the role {held!r}", status=403)
