"""GitHubClient's reset, delete, delete_grant and scoped against scripted answers (aioresponses)."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aioresponses import aioresponses

from gateway.config import UpstreamTokenConfig
from gateway.errors import AppCredentialsRejected, GitHubUnavailable, GitHubValidationFailed
from gateway.github import GitHubClient, IssuedToken
from gateway.identity import Identity

from .support.clock import FakeClock
from .support.github import (
    API,
    CID,
    CID2,
    OCTOCAT,
    TOKEN,
    TWO_APPS,
    Answered,
    assert_secret_free,
    authorization,
    sent,
)
from .support.sockets import free_port

NEW = "gho_NEW0000000000000000000000000000000000"
SCOPED = "ghu_SC0PED00000000000000000000000000000000"
SPEC = UpstreamTokenConfig(target="octo-org", repositories=("api",), permissions={"contents": "read"})


def installation(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "permissions": {"contents": "read", "metadata": "read"},
        "repository_selection": "selected",
        "single_file_name": None,
        "repositories_url": "https://api.github.com/user/repos",
        "account": {"login": "octo-org", "id": 100, "type": "Organization", "site_admin": False},
    }
    return body | changes


def scoped_answer(**changes: Any) -> dict[str, Any]:
    return authorization(SCOPED, scopes=[], installation=installation()) | changes


@dataclass(frozen=True)
class Op:
    """One operation as the tests drive it: how to call it, where it goes, what success looks like."""

    name: str
    id: str
    method: str
    path: str  # under /applications/{client_id}
    legacy: tuple[str, str, str] | None  # (operationId, method, path with {token})
    ok: int
    payload: Any
    call: Callable[[GitHubClient, str, str | None], Awaitable[Any]]
    repeatable: bool

    def url(self, cid: str = CID) -> str:
        return f"{API}/applications/{cid}{self.path}"

    @property
    def missing(self) -> Any:
        return False if self.ok == 204 else None


OPS = [
    Op(
        "reset",
        "apps/reset-token",
        "PATCH",
        "/token",
        ("apps/reset-authorization", "POST", "/tokens/{token}"),
        200,
        authorization(NEW),
        lambda c, t, cid: c.reset(t, client_id=cid),
        repeatable=False,
    ),
    Op(
        "delete",
        "apps/delete-token",
        "DELETE",
        "/token",
        ("apps/revoke-authorization-for-application", "DELETE", "/tokens/{token}"),
        204,
        None,
        lambda c, t, cid: c.delete(t, client_id=cid),
        repeatable=True,
    ),
    Op(
        "delete_grant",
        "apps/delete-authorization",
        "DELETE",
        "/grant",
        ("apps/revoke-grant-for-application", "DELETE", "/grants/{token}"),
        204,
        None,
        lambda c, t, cid: c.delete_grant(t, client_id=cid),
        repeatable=True,
    ),
    Op(
        "scoped",
        "apps/scope-token",
        "POST",
        "/token/scoped",
        None,
        200,
        scoped_answer(),
        lambda c, t, cid: c.scoped(t, SPEC, client_id=cid),
        repeatable=False,
    ),
]
each_op = pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
ISSUING = [op for op in OPS if op.ok == 200]
each_issuing_op = pytest.mark.parametrize("op", ISSUING, ids=[op.name for op in ISSUING])


def answer(m: aioresponses, op: Op, status: int | None = None, cid: str = CID, **kwargs: Any) -> None:
    status = op.ok if status is None else status
    if status == op.ok and "payload" not in kwargs and "body" not in kwargs and op.payload is not None:
        kwargs["payload"] = op.payload
    m.add(op.url(cid), op.method, status=status, **kwargs)
    if op.name == "scoped" and status == 404:  # then the app is asked whether it knows the token
        m.add(f"{API}/applications/{cid}/token", "POST", status=404, payload={"message": "Not Found"})


def asked(op: Op) -> int:
    """Calls per app that does not know the token: scoping asks it to check the token too."""
    return 2 if op.name == "scoped" else 1


# ---------------------------------------------------------------------------------------------------
# Success, and what is sent


async def test_reset_gives_the_new_token_and_its_identity(mocked: aioresponses, make: Any) -> None:
    mocked.patch(OPS[0].url(), payload=authorization(NEW))
    issued = await make().reset(TOKEN)
    assert issued == IssuedToken(NEW, OCTOCAT, {}, ())
    assert NEW not in repr(issued) and NEW not in str(issued) and "octocat" in repr(issued)
    ((method, url), calls) = next(iter(mocked.requests.items()))
    assert (method, url.path) == ("PATCH", f"/applications/{CID}/token")
    assert calls[0].kwargs["json"] == {"access_token": TOKEN}


async def test_reset_of_a_scoped_token_keeps_its_permissions(mocked: aioresponses, make: Any) -> None:
    mocked.patch(OPS[0].url(), payload=scoped_answer())
    issued = await make().reset(TOKEN)
    assert issued is not None and issued.token == SCOPED
    assert dict(issued.permissions) == {"contents": "read", "metadata": "read"}
    assert issued.repositories == ()  # GitHub does not name them, and none were asked for


@pytest.mark.parametrize("op", OPS[1:3], ids=["delete", "delete_grant"])
async def test_delete_sends_the_token_in_the_body(mocked: aioresponses, make: Any, op: Op) -> None:
    answer(mocked, op)
    assert await op.call(make(), TOKEN, None) is True
    ((method, url), calls) = next(iter(mocked.requests.items()))
    assert (method, url.path) == ("DELETE", f"/applications/{CID}{op.path}")
    assert calls[0].kwargs["json"] == {"access_token": TOKEN}


async def test_scoped_sends_the_spec_and_gives_the_restriction(mocked: aioresponses, make: Any) -> None:
    mocked.post(OPS[3].url(), payload=scoped_answer())
    issued = await make().scoped(TOKEN, SPEC)
    assert issued is not None and issued.token == SCOPED
    assert issued.identity == Identity("octocat", 1, (), OCTOCAT.expires_at, CID)
    assert dict(issued.permissions) == {"contents": "read", "metadata": "read"}
    assert issued.repositories == ("api",)
    ((_, calls),) = mocked.requests.items()
    assert calls[0].kwargs["json"] == {
        "access_token": TOKEN,
        "target": "octo-org",
        "repositories": ["api"],
        "permissions": {"contents": "read"},
    }


async def test_scoped_by_ids_to_all_repositories(mocked: aioresponses, make: Any) -> None:
    spec = UpstreamTokenConfig(target_id=100, repository_ids=(7, 8))
    mocked.post(OPS[3].url(), payload=scoped_answer())
    mocked.post(OPS[3].url(), payload=scoped_answer(installation=installation(repository_selection="all")))
    client = make()
    selected = await client.scoped(TOKEN, spec)
    assert selected is not None and selected.repositories == ("7", "8")  # GitHub names none: the ids asked
    everything = await client.scoped(TOKEN, spec)
    assert everything is not None and everything.repositories == ()
    calls = next(iter(mocked.requests.values()))
    assert calls[0].kwargs["json"] == {"access_token": TOKEN, "target_id": 100, "repository_ids": [7, 8]}


async def test_legacy_method_uses_the_deprecated_paths(mocked: aioresponses, make: Any) -> None:
    odd = "gho_a/b+c"  # b64token characters that need quoting in a path
    quoted = "gho_a%2Fb%2Bc"
    seen: list[str] = []
    client = make(check_method="legacy", observer=lambda op, _status, _s: seen.append(op))
    for op in OPS[:3]:
        assert op.legacy is not None
        _, method, path = op.legacy
        mocked.add(
            f"{API}/applications/{CID}{path.format(token=quoted)}", method, status=op.ok, payload=op.payload
        )
        assert await op.call(client, odd, None) == (
            IssuedToken(NEW, OCTOCAT, {}, ()) if op.ok == 200 else True
        )
    sent_paths = [(method, url.path) for (method, url) in mocked.requests]
    assert sent_paths == [
        ("POST", f"/applications/{CID}/tokens/{odd}"),
        ("DELETE", f"/applications/{CID}/tokens/{odd}"),
        ("DELETE", f"/applications/{CID}/grants/{odd}"),
    ]
    assert all(calls[0].kwargs["json"] is None for calls in mocked.requests.values())
    assert seen == [op.legacy[0] for op in OPS[:3] if op.legacy]


async def test_scoped_has_no_legacy_form(mocked: aioresponses, make: Any) -> None:
    mocked.post(OPS[3].url(), payload=scoped_answer())
    assert await make(check_method="legacy").scoped(TOKEN, SPEC) is not None
    ((method, url), _) = next(iter(mocked.requests.items()))
    assert (method, url.path) == ("POST", f"/applications/{CID}/token/scoped")


@each_op
async def test_observer_hears_githubs_operation_id(mocked: aioresponses, make: Any, op: Op) -> None:
    answer(mocked, op)
    seen: list[tuple[str, int | None]] = []
    await op.call(make(observer=lambda o, status, _s: seen.append((o, status))), TOKEN, None)
    assert seen == [(op.id, op.ok)]


# ---------------------------------------------------------------------------------------------------
# Apps: in order, or the one named


@each_op
async def test_404_from_every_app_means_no_app_knows_the_token(
    mocked: aioresponses, make: Any, op: Op, answered: Answered
) -> None:
    clock = FakeClock()
    answer(mocked, op, 404, payload={"message": "Not Found"})
    answer(mocked, op, 404, cid=CID2, payload={"message": "Not Found"})
    client = make(clock, apps=TWO_APPS)
    assert await op.call(client, TOKEN, None) is op.missing
    assert sent(mocked) == answered.count == 2 * asked(op)


@each_op
async def test_404_then_success_from_the_second_app(mocked: aioresponses, make: Any, op: Op) -> None:
    answer(mocked, op, 404, payload={"message": "Not Found"})
    answer(mocked, op, cid=CID2)
    result = await op.call(make(apps=TWO_APPS), TOKEN, None)
    if op.ok == 204:
        assert result is True
    else:
        assert result.identity.client_id == CID2


@each_op
async def test_a_named_app_is_the_only_one_asked(mocked: aioresponses, make: Any, op: Op) -> None:
    answer(mocked, op, 404, cid=CID2, payload={"message": "Not Found"})
    assert await op.call(make(apps=TWO_APPS), TOKEN, CID2) is op.missing
    paths = [f"/applications/{CID2}{op.path}", f"/applications/{CID2}/token"]
    assert [url.path for (_, url) in mocked.requests] == paths[: asked(op)]


@each_op
async def test_an_app_not_configured_is_a_value_error(mocked: aioresponses, make: Any, op: Op) -> None:
    with pytest.raises(ValueError, match=r"Iv1\.unknown"):
        await op.call(make(), TOKEN, "Iv1.unknown")
    assert sent(mocked) == 0


# ---------------------------------------------------------------------------------------------------
# Errors


@each_op
async def test_404_that_is_not_githubs_json_is_an_outage(mocked: aioresponses, make: Any, op: Op) -> None:
    answer(mocked, op, 404, body=b"<html>Not Found</html>", content_type="text/html")
    with pytest.raises(GitHubUnavailable, match="404"):
        await op.call(make(), TOKEN, None)


@each_op
async def test_401_rejects_the_app(
    mocked: aioresponses, make: Any, op: Op, caplog: pytest.LogCaptureFixture
) -> None:
    answer(mocked, op, 401, payload={"message": "Bad credentials"})
    with pytest.raises(AppCredentialsRejected, match=CID) as caught:
        await op.call(make(apps=TWO_APPS), TOKEN, None)
    assert sent(mocked) == 1
    assert_secret_free(caught.value, caplog)


@each_op
async def test_403_is_unavailable_with_githubs_message(mocked: aioresponses, make: Any, op: Op) -> None:
    answer(mocked, op, 403, payload={"message": "Forbidden", "documentation_url": "https://docs"})
    answer(mocked, op)
    client = make()
    with pytest.raises(GitHubUnavailable) as caught:
        await op.call(client, TOKEN, None)
    assert caught.value.status == 403 and not isinstance(caught.value, GitHubValidationFailed)
    assert caught.value.details == {"message": "Forbidden", "documentation_url": "https://docs"}
    assert await op.call(client, TOKEN, None) not in (None, False)  # not backed off


@each_op
async def test_rate_limit_403_backs_off(mocked: aioresponses, make: Any, op: Op) -> None:
    answer(mocked, op, 403, payload={"message": "rate limit"}, headers={"Retry-After": "9"})
    client = make()
    with pytest.raises(GitHubUnavailable):
        await op.call(client, TOKEN, None)
    assert client.retry_after() == 9


@each_op
async def test_422_is_validation_failed_with_details_and_no_backoff(
    mocked: aioresponses,
    make: Any,
    op: Op,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    answered: Answered,
) -> None:
    body = {
        "message": "Validation Failed",
        "documentation_url": "https://docs.github.com/rest",
        "errors": [
            {"resource": "OauthAccess", "field": "access_token", "code": "invalid", "value": TOKEN},
            {
                "resource": "ScopedToken",
                "field": "repositories",
                "code": "invalid",
                "message": "no such repo",
            },
        ],
    }
    answer(mocked, op, 422, payload=body)
    answer(mocked, op)
    clock = FakeClock()
    client = make(clock, apps=TWO_APPS)
    with pytest.raises(GitHubValidationFailed) as caught:
        await op.call(client, TOKEN, None)
    error = caught.value
    assert isinstance(error, GitHubUnavailable) and error.status == 422
    assert error.details == {
        "message": "Validation Failed",
        "documentation_url": "https://docs.github.com/rest",
        "errors": [
            {"resource": "OauthAccess", "field": "access_token", "code": "invalid"},
            {
                "resource": "ScopedToken",
                "field": "repositories",
                "code": "invalid",
                "message": "no such repo",
            },
        ],
    }
    assert str(error) == (
        f"GitHub refused {op.id} (422): Validation Failed; OauthAccess access_token invalid; "
        "ScopedToken repositories invalid no such repo"
    )
    assert sent(mocked) == 1 and sleeps == []  # neither retried nor handed to the next app
    assert answered.count == 1  # GitHub is up: it judged the input
    assert await op.call(client, TOKEN, None) not in (None, False)  # not backed off
    assert_secret_free(error, caplog)


@each_op
async def test_422_without_a_body_is_still_validation_failed(mocked: aioresponses, make: Any, op: Op) -> None:
    answer(mocked, op, 422, body=b"")
    with pytest.raises(GitHubValidationFailed, match=r"\(422\): Validation Failed") as caught:
        await op.call(make(), TOKEN, None)
    assert caught.value.details is None


@each_op
async def test_500_is_retried_only_where_repeating_is_safe(
    mocked: aioresponses, make: Any, op: Op, sleeps: list[float]
) -> None:
    answer(mocked, op, 500, payload={"message": "Server Error"})
    answer(mocked, op)
    client = make(retries=2)
    if op.repeatable:
        assert await op.call(client, TOKEN, None) is True
        assert sent(mocked) == 2 and len(sleeps) == 1
        return
    with pytest.raises(GitHubUnavailable) as caught:  # the first may have reset or minted: never again
        await op.call(client, TOKEN, None)
    assert caught.value.status == 500 and sent(mocked) == 1 and sleeps == []
    assert client.retry_after() == 1  # backed off


@each_op
async def test_timeout(mocked: aioresponses, make: Any, op: Op) -> None:
    mocked.add(op.url(), op.method, exception=TimeoutError(), repeat=True)
    client = make(retries=1)
    with pytest.raises(GitHubUnavailable, match="did not answer within 5s"):
        await op.call(client, TOKEN, None)
    assert sent(mocked) == (2 if op.repeatable else 1)
    assert client.retry_after() == 1


@each_op
async def test_refused_connection_is_retried_by_every_operation(
    make: Any, sleeps: list[float], op: Op
) -> None:
    client = make(api_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GitHubUnavailable, match="cannot reach GitHub") as caught:
        await op.call(client, TOKEN, None)
    assert len(sleeps) == 1  # never connected, so never reached GitHub: safe to repeat
    assert_secret_free(caught.value)


@each_op
async def test_backed_off_fails_fast(mocked: aioresponses, make: Any, op: Op) -> None:
    mocked.post(f"{API}/applications/{CID}/token", status=503, payload={"message": "Unavailable"})
    client = make(retries=0)
    with pytest.raises(GitHubUnavailable):
        await client.check(TOKEN)
    with pytest.raises(GitHubUnavailable, match="backed off"):
        await op.call(client, TOKEN, None)
    assert sent(mocked) == 1


# ---------------------------------------------------------------------------------------------------
# Answers off GitHub's schema


@pytest.mark.parametrize("status", [200, 201])
@pytest.mark.parametrize("op", OPS[1:3], ids=["delete", "delete_grant"])
async def test_delete_answered_other_than_204_is_an_outage(
    mocked: aioresponses, make: Any, op: Op, status: int, answered: Answered
) -> None:
    answer(mocked, op, status, payload={"message": "ok"})
    client = make()
    with pytest.raises(GitHubUnavailable, match="did not fit its schema"):
        await op.call(client, TOKEN, None)
    assert answered.count == 0


BAD_ISSUED = {
    "token missing": {k: v for k, v in authorization(NEW).items() if k != "token"},
    "token empty": authorization(""),
    "token null": authorization(NEW) | {"token": None},
    "token with a space": authorization("gho_new token"),
    "token with CR/LF": authorization("gho_new\r\nX-Injected: yes"),
    "token too long": authorization("gho_" + "a" * 252),
    "token a number": authorization(NEW) | {"token": 12345},
    "user missing": {k: v for k, v in authorization(NEW).items() if k != "user"},
    "login with CR/LF": authorization(NEW, user__login="octocat\r\nX-Injected: yes"),
    "id a string": authorization(NEW, user__id="1"),
    "scopes missing": {k: v for k, v in authorization(NEW).items() if k != "scopes"},
    "expires_at garbage": authorization(NEW, expires_at="tomorrow"),
    "installation a list": authorization(NEW, installation=[]),
    "a list": [authorization(NEW)],
    "not json": b"<html>unicorn</html>",
    "empty": b"",
}


@each_issuing_op
@pytest.mark.parametrize("bad", BAD_ISSUED.values(), ids=BAD_ISSUED.keys())
async def test_an_issued_token_off_githubs_schema_is_an_outage(
    mocked: aioresponses, make: Any, op: Op, bad: Any, answered: Answered
) -> None:
    if isinstance(bad, bytes):
        answer(mocked, op, 200, body=bad)
    else:
        answer(mocked, op, 200, payload=bad)
    client = make()
    with pytest.raises(GitHubUnavailable, match=r"did not fit its schema|not JSON") as caught:
        await op.call(client, TOKEN, None)
    text = "".join(traceback.format_exception(caught.value))
    assert NEW not in text and "X-Injected" not in text and "unicorn" not in text
    assert answered.count == 0
    assert_secret_free(caught.value)


async def test_a_255_character_token_is_accepted(mocked: aioresponses, make: Any) -> None:
    longest = "ghu_" + "a/b+c.d_e-f~" * 20 + "a" * 9 + "=="  # every b64token character
    assert len(longest) == 255
    mocked.patch(OPS[0].url(), payload=authorization(longest))
    issued = await make().reset(TOKEN)
    assert issued is not None and issued.token == longest


BAD_INSTALLATIONS = {
    "missing": {k: v for k, v in scoped_answer().items() if k != "installation"},
    "null": scoped_answer(installation=None),
    "permissions missing": scoped_answer(installation={"repository_selection": "all"}),
    "permission level unknown": scoped_answer(installation=installation(permissions={"contents": "own"})),
    "permission name odd": scoped_answer(installation=installation(permissions={"X-Injected: yes": "read"})),
    "permissions a list": scoped_answer(installation=installation(permissions=["contents"])),
    "repository_selection unknown": scoped_answer(installation=installation(repository_selection="some")),
    "repository_selection missing": scoped_answer(
        installation={k: v for k, v in installation().items() if k != "repository_selection"}
    ),
}


@pytest.mark.parametrize("bad", BAD_INSTALLATIONS.values(), ids=BAD_INSTALLATIONS.keys())
async def test_a_scoped_answer_without_a_valid_installation_is_an_outage(
    mocked: aioresponses, make: Any, bad: Any
) -> None:
    mocked.post(OPS[3].url(), payload=bad)
    with pytest.raises(GitHubUnavailable, match="installation") as caught:
        await make().scoped(TOKEN, SPEC)
    assert SCOPED not in "".join(traceback.format_exception(caught.value))


async def test_issued_tokens_are_immutable_values(mocked: aioresponses, make: Any) -> None:
    mocked.post(OPS[3].url(), payload=scoped_answer())
    client: GitHubClient = make()
    issued = await client.scoped(TOKEN, SPEC)
    assert issued is not None
    with pytest.raises(TypeError):
        issued.permissions["contents"] = "write"  # type: ignore[index]
    with pytest.raises(AttributeError):
        issued.token = "x"  # type: ignore[misc]
