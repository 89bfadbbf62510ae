"""Routes, paths and scopes as pure functions: no sockets."""

from __future__ import annotations

import pytest

from gateway.config import Route
from gateway.errors import BadRequest, Forbidden, InsufficientScope
from gateway.identity import Identity
from gateway.paths import normalise_path, split_target
from gateway.policy import CompiledRoute, RouteTable, granted_scopes


def identity(login: str = "alice", user_id: int = 1, scopes: tuple[str, ...] = ()) -> Identity:
    return Identity(login=login, user_id=user_id, scopes=scopes, expires_at=None, client_id="Iv1.x")


def route(path: str = "/", **kw: object) -> CompiledRoute:
    return CompiledRoute.build(Route.model_validate({"path": path, "upstream": "http://u:1", **kw}))


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a//b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/x/../b", "/a/b"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/%7euser", "/a/~user"),
        ("/a/%41", "/a/A"),
        ("/a/%c3%a9", "/a/%C3%A9"),
        ("/a/b/", "/a/b/"),
        ("/a/b/..", "/a/"),
    ],
)
def test_paths_normalise_to_one_canonical_form(raw: str, normal: str) -> None:
    assert normalise_path(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "/..",
        "/a/../..",
        "/%2e%2e",
        "/a%2fb",
        "/a%2Fb",
        "/a\\b",
        "/a%5cb",
        "/a;b",
        "/a%00",
        "/a%3bb",
        "/a b",
        "/%zz",
        "x",
        "/a./b",
        "/a%2E",
        "/a%20/b",
        "/%09a",
        "/a%e3%80%80",
        "/a%0Bb",
        "/a%7f",
        "/a%c2%9f",
        "/%c5%bfvc",
        "/%e2%84%aa",
        "/%ef%ac%80",
        "/a%ff",
        "/%c0%ae%c0%ae",
    ],
)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest):
        normalise_path(raw)


@pytest.mark.parametrize(
    ("target", "split"),
    [
        ("/a/./b?x=1", ("/a/b", "x=1")),
        ("/a?next=/../b?c", ("/a", "next=/../b?c")),
        ("/a?x=%23y", ("/a", "x=%23y")),
        ("/a?", ("/a", "")),
        ("/a", ("/a", "")),
    ],
)
def test_a_target_splits_into_the_normalised_path_and_the_query_as_sent(
    target: str, split: tuple[str, str]
) -> None:
    assert split_target(target) == split


@pytest.mark.parametrize("target", ["/a?x=1#y", "/a?#", "/a#b?c", "/a#"])
def test_a_hash_anywhere_in_a_target_is_refused(target: str) -> None:
    with pytest.raises(BadRequest):
        split_target(target)


def test_longest_whole_segment_prefix_wins_case_insensitively() -> None:
    table = RouteTable(
        tuple(
            Route.model_validate({"path": p, "upstream": "http://u:1"}) for p in ("/", "/api", "/api/admin")
        )
    )

    def path_of(p: str) -> str | None:
        m = table.match(p)
        return None if m is None else m.route.path

    assert path_of("/api") == "/api"
    assert path_of("/api/") == "/api"
    assert path_of("/api/x") == "/api"
    assert path_of("/apix") == "/"
    assert path_of("/api/admin/users") == "/api/admin"
    assert path_of("/API/Admin") == "/api/admin"
    assert path_of("/other") == "/"


def test_no_route_when_nothing_matches() -> None:
    table = RouteTable((Route.model_validate({"path": "/api", "upstream": "http://u:1"}),))
    assert table.match("/") is None
    assert table.match("/apiv2") is None


def test_strip_prefix_and_upstream_path() -> None:
    r = route("/api", strip_prefix=True, upstream="http://u:1/base")
    assert r.upstream_target("/api/x", "a=1") == "/base/x?a=1"
    assert r.upstream_target("/api", "") == "/base/"
    plain = route("/api", upstream="http://u:1/")
    assert plain.upstream_target("/api/x", "") == "/api/x"


@pytest.mark.parametrize(
    ("held", "needed"),
    [
        ("repo", "public_repo"),
        ("repo", "repo:status"),
        ("repo", "security_events"),
        ("admin:org", "read:org"),
        ("admin:org", "write:org"),
        ("write:org", "read:org"),
        ("user", "user:email"),
        ("user", "read:user"),
        ("admin:repo_hook", "read:repo_hook"),
        ("admin:public_key", "read:public_key"),
        ("admin:gpg_key", "read:gpg_key"),
        ("write:packages", "read:packages"),
        ("project", "read:project"),
        ("admin:enterprise", "read:enterprise"),
    ],
)
def test_scope_hierarchy_grants_narrower_scopes(held: str, needed: str) -> None:
    assert needed in granted_scopes((held,))


@pytest.mark.parametrize(
    ("held", "needed"),
    [("public_repo", "repo"), ("read:org", "write:org"), ("read:user", "user"), ("repo", "read:org")],
)
def test_scope_hierarchy_never_grants_upwards_or_sideways(held: str, needed: str) -> None:
    assert needed not in granted_scopes((held,))


def test_missing_scopes_are_named() -> None:
    with pytest.raises(InsufficientScope) as err:
        route(scopes=["read:org", "gist"]).authorize(identity(scopes=("admin:org",)))
    assert 'scope="gist"' in err.value.headers["WWW-Authenticate"]


def test_users_and_user_ids_allow_lists() -> None:
    r = route(users=["Alice"], user_ids=[42])
    r.authorize(identity("alice", 1))
    r.authorize(identity("zed", 42))
    with pytest.raises(Forbidden):
        r.authorize(identity("bob", 2))


def test_methods_allow_list() -> None:
    r = route(methods=["get", "HEAD"])
    r.check_method("GET")
    with pytest.raises(Forbidden):
        r.check_method("DELETE")


@pytest.mark.parametrize(
    "raw",
    [
        "/",
        "/a",
        "/a/b/",
        "/.well-known/x",
        "/a/..b",
        "/v1/users/octo-cat~1:x@y",
        "/caf%C3%A9",
        "/%C3%85ngstr%C3%B6m",
        "/a%20b",
        "/%E6%97%A5%E6%9C%AC",
    ],
)
def test_paths_already_canonical_are_kept_as_they_are(raw: str) -> None:
    assert normalise_path(raw) == raw
