"""The fake GitHub's two kinds of app: what an OAuth App and a GitHub App issue, and what the fake
refuses to register because the app's kind could not have issued it."""

from __future__ import annotations

import pytest

from gateway.testing.fake_github import GITHUB_APP, OAUTH_APP, FakeGitHub

from .support.clock import FakeClock

OAUTH, GITHUB = "Ov23liA1b2C3d4E5f6G7", "Iv23liGitHubApp00001"
EIGHT_HOURS, SIX_MONTHS = 8 * 3600, 15_897_600


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def fake(clock: FakeClock) -> FakeGitHub:
    return FakeGitHub({OAUTH: "oauth-secret", GITHUB: "app-secret"}, clock=clock)


def test_the_client_ids_shape_tells_the_kind(fake: FakeGitHub) -> None:
    assert [app.kind for app in fake.settings.values()] == [OAUTH_APP, GITHUB_APP]
    assert FakeGitHub({"Iv1.8a61f9b3a7aba766": "s"}).settings["Iv1.8a61f9b3a7aba766"].kind == GITHUB_APP
    assert FakeGitHub({"0123456789abcdef0123": "s"}).settings["0123456789abcdef0123"].kind == OAUTH_APP
    fake.register_app("corp-app", "s", kind=GITHUB_APP)
    assert fake.settings["corp-app"].kind == GITHUB_APP and fake.apps["corp-app"] == "s"


def test_an_oauth_app_token_has_scopes_and_never_expires(fake: FakeGitHub) -> None:
    token = fake.add_token("alice", 7, ["repo", "read:org"], client_id=OAUTH)
    entry = fake.lookup(token)
    assert token.startswith("gho_") and entry is not None
    assert (entry.scopes, entry.expires_at, entry.client_id) == (("repo", "read:org"), None, OAUTH)


def test_a_github_app_token_has_no_scopes_and_expires_after_8_hours(
    fake: FakeGitHub, clock: FakeClock
) -> None:
    token = fake.add_token("bob", 8, client_id=GITHUB)
    entry = fake.lookup(token)
    assert token.startswith("ghu_") and entry is not None
    assert (entry.scopes, entry.expires_at) == ((), clock.now + EIGHT_HOURS)
    clock.advance(EIGHT_HOURS)
    assert fake.live(token, GITHUB) is None


def test_what_an_apps_kind_could_not_issue_is_refused(fake: FakeGitHub) -> None:
    with pytest.raises(ValueError, match="GitHub App: its user tokens have no scopes"):
        fake.add_token("bob", 8, ["repo"], client_id=GITHUB)
    with pytest.raises(ValueError, match="OAuth App whose tokens do not expire"):
        fake.add_token("alice", 7, client_id=OAUTH, expires_in=60)
    with pytest.raises(ValueError, match="start with gho_"):
        fake.add_token("alice", 7, client_id=OAUTH, token="ghu_not_an_oauth_apps")
    with pytest.raises(ValueError, match="start with ghu_"):
        fake.add_token("bob", 8, client_id=GITHUB, token="gho_not_a_github_apps")
    fake.register_app("Iv23liNoExpiry000001", "s", expiring_tokens=False)
    with pytest.raises(ValueError, match="do not expire"):
        fake.add_token("bob", 8, client_id="Iv23liNoExpiry000001", expires_in=60)
    with pytest.raises(ValueError, match="unknown app"):
        fake.add_token("bob", 8, client_id="Iv1.unknown")


def test_only_a_github_app_is_the_app_of_set_app(fake: FakeGitHub) -> None:
    with pytest.raises(ValueError, match="OAuth App"):
        fake.set_app(4242, "pem", client_id=OAUTH)
    assert fake.set_app(4242, "pem").client_id == GITHUB  # the first GitHub App


def test_issue_gives_an_oauth_app_token_alone(fake: FakeGitHub) -> None:
    fake.add_user("alice", 7)
    issued = fake.issue("alice", client_id=OAUTH, scopes=["repo", "gist"])
    assert issued.body() == {
        "access_token": issued.access_token,
        "scope": "repo,gist",
        "token_type": "bearer",
    }
    assert issued.access_token.startswith("gho_") and issued.refresh_token is None
    assert issued.access_token not in repr(issued)


def test_issue_gives_a_github_app_token_with_a_refresh_token(fake: FakeGitHub, clock: FakeClock) -> None:
    fake.add_user("bob", 8)
    issued = fake.issue("bob", client_id=GITHUB)
    body = issued.body()
    assert issued.refresh_token is not None and issued.refresh_token.startswith("ghr_")
    assert list(body) == [
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "scope",
        "token_type",
    ]
    assert (body["expires_in"], body["refresh_token_expires_in"], body["scope"]) == (
        EIGHT_HOURS,
        SIX_MONTHS,
        "",
    )
    entry = fake.live(issued.access_token, GITHUB)
    assert entry is not None and entry.expires_at == clock.now + EIGHT_HOURS
    with pytest.raises(ValueError, match="no scopes"):
        fake.issue("bob", client_id=GITHUB, scopes=["repo"])
    with pytest.raises(ValueError, match="unknown user"):
        fake.issue("nobody", client_id=GITHUB)


def test_a_refresh_token_works_once_and_retires_its_pair(fake: FakeGitHub) -> None:
    fake.add_user("bob", 8)
    first = fake.issue("bob", client_id=GITHUB)
    assert first.refresh_token is not None
    second = fake.refresh(GITHUB, first.refresh_token)
    assert second is not None and second.access_token != first.access_token
    assert fake.live(first.access_token, GITHUB) is None  # the old user token stops working too
    assert fake.live(second.access_token, GITHUB) is not None
    assert fake.refresh(GITHUB, first.refresh_token) is None  # used
    assert second.refresh_token is not None and fake.refresh(OAUTH, second.refresh_token) is None


def test_a_refresh_token_expires_after_6_months_and_dies_with_its_revoked_token(
    fake: FakeGitHub, clock: FakeClock
) -> None:
    fake.add_user("bob", 8)
    old, revoked = fake.issue("bob", client_id=GITHUB), fake.issue("bob", client_id=GITHUB)
    assert old.refresh_token is not None and revoked.refresh_token is not None
    fake.revoke(revoked.access_token)
    assert fake.refresh(GITHUB, revoked.refresh_token) is None
    clock.advance(SIX_MONTHS)
    assert fake.refresh(GITHUB, old.refresh_token) is None


def test_a_github_app_without_expiration_issues_lasting_tokens_alone(fake: FakeGitHub) -> None:
    fake.register_app("Iv23liNoExpiry000001", "s", expiring_tokens=False)
    fake.add_user("bob", 8)
    issued = fake.issue("bob", client_id="Iv23liNoExpiry000001")
    assert issued.body() == {"access_token": issued.access_token, "scope": "", "token_type": "bearer"}
    entry = fake.lookup(issued.access_token)
    assert entry is not None and entry.expires_at is None
