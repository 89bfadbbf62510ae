"""Who a caller is: the identity value and token digests (`value`), the cache tiers that hold
identities by digest (`cache` in process, `redis` shared), and single flight (`singleflight`).

Only the value is imported here: the tiers are imported by name where they are wired.
"""

from .value import (
    LOGIN,
    MAX_ID,
    MAX_TOKEN_LENGTH,
    SCOPE,
    Identity,
    checked_identity,
    shared_scopes,
    token_digest,
    token_id,
    well_formed_token,
)

__all__ = [
    "LOGIN",
    "MAX_ID",
    "MAX_TOKEN_LENGTH",
    "SCOPE",
    "Identity",
    "checked_identity",
    "shared_scopes",
    "token_digest",
    "token_id",
    "well_formed_token",
]
