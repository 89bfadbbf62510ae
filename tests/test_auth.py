"""Bearer parsing: what reaches GitHub and what is refused before it."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth import bearer_token
from gateway.errors import BadRequest, InvalidToken


def headers(*values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(("Authorization", v) for v in values))


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer gho_abc", "gho_abc"),
        ("bearer gho_abc", "gho_abc"),
        ("BEARER gho_abc", "gho_abc"),
        ("token gho_abc", "gho_abc"),
        ("Token ghu_a.b-c~d+e/f==", "ghu_a.b-c~d+e/f=="),
        ("Bearer " + "a" * 255, "a" * 255),
    ],
)
def test_well_formed_bearer_tokens_are_read(value: str, token: str) -> None:
    assert bearer_token(headers(value)) == token


def test_no_authorization_header_means_no_credentials() -> None:
    assert bearer_token(headers()) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer  gho_abc",
        "Bearer gho abc",
        "Bearer " + "a" * 256,
        "Basic YTpi",
        "Bearer gho_abc\t",
        "Bearer =abc",
        "Bearer a=b",
        "Bearer gho_\u00e9",
        "Bearer gho_abc,Bearer x",
    ],
)
def test_malformed_credentials_are_invalid_token(value: str) -> None:
    with pytest.raises(InvalidToken) as err:
        bearer_token(headers(value))
    assert "gho_abc" not in str(err.value)


def test_two_authorization_headers_are_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        bearer_token(headers("Bearer a", "Bearer b"))
