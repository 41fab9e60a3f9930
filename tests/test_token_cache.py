"""Access tokens are verified once per process, and a remembered one still expires."""

from __future__ import annotations

import time

import msgspec
import pytest

from podium.auth import tokens
from podium.auth.tokens import TokenError, TokenIssuer


def issuer() -> TokenIssuer:
    return TokenIssuer("k" * 48, "podium", "podium", 900, 3600)


def test_a_remembered_token_is_the_same_principal_until_it_expires() -> None:
    tok = issuer()
    now = int(time.time())
    token = tok.access(7, "player", "fam", now=now)
    first = tok.access_principal(token)
    assert tok.access_principal(token) is first  # no second verification
    assert (first.user_id, first.family, first.exp) == (7, "fam", now + 900)
    # Issued long enough ago that it expired while remembered.
    old = tok.access(8, "player", "fam", now=now - 890)
    assert tok.access_principal(old).user_id == 8
    # As if the clock moved past its expiry (the entry as PyJWT verified it, earlier).
    tok._verified[old] = msgspec.structs.replace(tok._verified[old], exp=now - 1)
    with pytest.raises(TokenError) as err:
        tok.access_principal(old)
    assert err.value.expired
    assert old not in tok._verified  # and it is not remembered any more


def test_only_verified_tokens_are_remembered_and_the_memory_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tok = issuer()
    token = tok.access(7, "player", "fam")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (tampered, "not-a-jwt", tok.refresh(7, "fam", "j")):
        with pytest.raises(TokenError):
            tok.access_principal(bad)
    assert tok._verified == {}
    # Another key's token is not ours, whatever its claims.
    with pytest.raises(TokenError):
        tok.access_principal(
            TokenIssuer("x" * 48, "podium", "podium", 900, 3600).access(7, "admin", "f")
        )
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 3)
    issued = [tok.access(i, "player", f"fam{i}") for i in range(5)]
    for t in issued:
        tok.access_principal(t)
    assert list(tok._verified) == issued[2:]
