"""Path confusion: one normalised path decides the route, the policy and what the upstream receives,
whatever encoding trick the request line carries; ambiguous paths get 400 (README: What callers get back,
issue 4).

`mallory` holds a valid token without the scope /admin requires: a 403 proves a request was judged by
the /admin route, a 200 that some other route let it through.
"""

from __future__ import annotations

import pytest

from ..support.sockets import body_of, exchange, raw, statuses
from ..support.upstreams import RecordingUpstream
from ..support.world import Gateway, GatewayFactory


async def get(gateway: Gateway, target: str, token: str | None = None) -> tuple[int, bytes]:
    headers = [f"Authorization: Bearer {token}"] if token else []
    answer = await exchange(gateway.port, raw("GET", target, *headers))
    [status] = statuses(answer)
    return status, answer


async def assert_refused_as_ambiguous(
    gateway: Gateway, upstream: RecordingUpstream, target: str, token: str | None = None
) -> None:
    status, answer = await get(gateway, target, token)
    assert status == 400, target
    assert body_of(answer)["error"] == "bad_request"
    assert upstream.received == []


@pytest.mark.parametrize(
    "target", ["/public/../../etc/passwd", "/..", "/public/%2e%2e/%2E%2E/etc/passwd", "/public/.%2e/.%2e/x"]
)
async def test_dot_dot_above_the_root_is_400(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """CVE-2021-43798 (Grafana plugin path traversal): `..` climbing out of the served tree."""
    await assert_refused_as_ambiguous(gateway, upstream, target)


@pytest.mark.parametrize(
    "target", ["/public/../admin/x", "/public/./../admin/x", "/_gateway/../admin/x", "/strip/../admin/x"]
)
async def test_dot_dot_out_of_a_public_route_is_judged_by_the_route_it_lands_on(
    gateway: Gateway, upstream: RecordingUpstream, mallory: str, target: str
) -> None:
    """CVE-2019-9901 (Envoy did not normalise paths): `something/../admin` bypassed access control."""
    status, _ = await get(gateway, target, mallory)
    assert status == 403
    assert upstream.received == []


@pytest.mark.parametrize("target", ["/public/%2e%2e/admin/x", "/public/.%2E/admin/x", "/public/%2E./admin/x"])
async def test_encoded_dot_segments_cannot_climb_out_of_a_public_route(
    gateway: Gateway, upstream: RecordingUpstream, mallory: str, target: str
) -> None:
    """CVE-2021-41773 (Apache httpd `.%2e` traversal): dot segments decoded after the access check."""
    status, _ = await get(gateway, target, mallory)
    assert status == 403
    assert upstream.received == []


async def test_double_encoded_dots_are_decoded_once_and_stay_under_the_public_route(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """CVE-2021-42013 (Apache httpd double decoding): `%252e` must never become `.` on the way."""
    status, _ = await get(gateway, "/public/%252e%252e/admin")
    assert status == 200
    assert upstream.paths == ["/public/%252e%252e/admin"]


@pytest.mark.parametrize(
    "target", ["/public%2F..%2Fadmin", "/public/..%2fadmin", "/public%2fadmin", "/public/%2F/admin"]
)
async def test_encoded_slash_cannot_reach_a_protected_route(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """CVE-2021-29492 (Envoy, GHSA-4987-27fx-x6cf) and CVE-2021-31920 (Istio): `%2F` read as `/`
    upstream only."""
    await assert_refused_as_ambiguous(gateway, upstream, target)


@pytest.mark.parametrize("target", ["/public%5C..%5Cadmin", "/public\\..\\admin", "/public/..\\admin"])
async def test_backslash_raw_or_encoded_is_400(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """CVE-2021-29492 (Envoy `%5C`): a backslash is a separator to Windows-style upstreams."""
    await assert_refused_as_ambiguous(gateway, upstream, target)


@pytest.mark.parametrize(
    "target",
    ["/public/..;/admin", "/public;/../admin", "/admin;.css", "/public/%3B/../admin", "/public/..%3b/admin"],
)
async def test_semicolon_path_parameters_are_400(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """CVE-2024-0204 (GoAnywhere `/..;/`): Tomcat/Spring strip `;params` after the proxy decided."""
    await assert_refused_as_ambiguous(gateway, upstream, target)


@pytest.mark.parametrize("target", ["/public/%00/../admin", "/admin%00.css", "/public%00"])
async def test_nul_byte_in_the_path_is_400(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """NUL truncation: a C upstream ends the path at `%00`, after the gateway matched the whole."""
    await assert_refused_as_ambiguous(gateway, upstream, target)


@pytest.mark.parametrize(
    "target",
    [
        "/admin#x",
        "/admin/#/x",
        "/admin#/../public",
        "/public?a=1#b",
        "/public?#",
        "/public?next=/x#/../admin",
    ],
)
async def test_fragment_in_the_request_target_is_400(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """CVE-2021-39156 (Istio, GHSA-hqxw-mm44-gc4r): a `#` in the path bypassed path-based policy, and
    an upstream cuts the URL at the `#`: path or query, it would act on less than was sent."""
    await assert_refused_as_ambiguous(gateway, upstream, target)


async def test_an_encoded_hash_in_the_query_reaches_the_upstream_as_sent(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """`%23` is how a query carries a `#`: forwarded byte for byte, never decoded into a fragment."""
    status, _ = await get(gateway, "/public?a=%23b&c=%2523")
    assert status == 200
    assert upstream.paths == ["/public?a=%23b&c=%2523"]


@pytest.mark.parametrize("target", ["//admin/x", "/public//..//admin/x", "///admin"])
async def test_repeated_slashes_cannot_dodge_a_protected_prefix(
    gateway: Gateway, upstream: RecordingUpstream, mallory: str, target: str
) -> None:
    """CVE-2021-31920 (Istio): a policy on `/admin` did not apply to `//admin`."""
    status, _ = await get(gateway, target, mallory)
    assert status == 403
    assert upstream.received == []


@pytest.mark.parametrize("target", ["/ADMIN/x", "/Admin", "/aDmIn/x"])
async def test_case_variants_are_judged_by_the_protected_route(
    gateway: Gateway, upstream: RecordingUpstream, mallory: str, target: str
) -> None:
    """Case confusion: a case-sensitive policy in front of a case-insensitive upstream."""
    status, _ = await get(gateway, target, mallory)
    assert status == 403
    assert upstream.received == []


@pytest.mark.parametrize("target", ["/publicity", "/public.json", "/public..json"])
async def test_a_prefix_without_a_segment_boundary_is_not_the_public_route(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """nginx off-by-slash (`location /public` without its `/`): a prefix that matches mid-segment."""
    status, answer = await get(gateway, target)
    assert status == 401
    assert body_of(answer)["error"] == "unauthenticated"
    assert upstream.received == []


@pytest.mark.parametrize(
    "target", ["http://evil.example/public/x", "http://evil.example/admin", "https://127.0.0.1/public"]
)
async def test_absolute_form_target_is_400_and_never_chooses_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """Absolute-form confusion: the authority in the request line read as host or path by one side only."""
    await assert_refused_as_ambiguous(gateway, upstream, target)


@pytest.mark.parametrize("head", ["CONNECT evil.example:443", "OPTIONS *"])
async def test_connect_and_asterisk_form_are_400(
    gateway: Gateway, upstream: RecordingUpstream, head: str
) -> None:
    """Open-proxy abuse: a reverse proxy that tunnels CONNECT reaches any host the gateway can."""
    method, target = head.split(" ")
    answer = await exchange(gateway.port, raw(method, target))
    assert statuses(answer) == [400]
    assert upstream.received == []


@pytest.mark.parametrize("target", ["/public/%c0%ae%c0%ae/admin", "/public/..%c0%af../admin", "/public%FF"])
async def test_percent_encoded_bytes_that_are_not_utf8_are_400(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """CVE-2000-0884 (IIS Unicode traversal): overlong `%c0%ae` decoded as `.` after the access check;
    bytes that are not UTF-8 have no one reading (a server may fall back to a legacy code page)."""
    await assert_refused_as_ambiguous(gateway, upstream, target)


async def test_a_query_string_cannot_carry_a_path(gateway: Gateway, upstream: RecordingUpstream) -> None:
    """Query confusion: dot segments after `?` belong to the query, never to the routed path."""
    status, _ = await get(gateway, "/public?/../../admin")
    assert status == 200
    assert upstream.paths == ["/public?/../../admin"]
    status, _ = await get(gateway, "/admin?/../public")
    assert status == 401
    assert len(upstream.received) == 1


async def test_the_upstream_receives_exactly_the_path_that_was_authorized(
    gateway: Gateway, upstream: RecordingUpstream, mallory: str
) -> None:
    """Issue 4, "one path, one decision": routing, policy and the upstream see one normalised path."""
    assert (await get(gateway, "/svc/a/./b/../c//d/%7e%41", mallory))[0] == 200
    assert (await get(gateway, "/strip/x/../y", mallory))[0] == 200
    assert upstream.paths == ["/svc/a/c/d/~A", "/base/y"]
    assert [line["path"] for line in gateway.log_lines()] == ["/svc/a/c/d/~A", "/strip/y"]


# Issue 9: segments an upstream reads as another. The gateway below protects /svc (a scope mallory
# lacks: 403) and lets any valid token through / (200): each spelling of /svc must be refused, never
# judged by / and forwarded as sent for an upstream to route to /svc.


@pytest.fixture
async def svc_gateway(start_gateway: GatewayFactory, upstream: RecordingUpstream) -> Gateway:
    return await start_gateway(
        routes=[
            {"path": "/svc", "upstream": upstream.url, "scopes": ["admin:org"]},
            {"path": "/", "upstream": upstream.url},
        ]
    )


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/svc./x", id="trailing dot (IIS, Windows)"),
        pytest.param("/svc%2e/x", id="encoded trailing dot"),
        pytest.param("/svc.%2E/x", id="trailing dots"),
        pytest.param("/svc%20/x", id="trailing space (IIS, Windows)"),
        pytest.param("/%20svc/x", id="leading space (Java trim)"),
        pytest.param("/svc%C2%A0/x", id="trailing no-break space (.NET Trim)"),
        pytest.param("/svc%E3%80%80/x", id="trailing ideographic space"),
    ],
)
async def test_a_segment_servers_trim_is_400(
    svc_gateway: Gateway, upstream: RecordingUpstream, mallory: str, target: str
) -> None:
    """IIS and Windows drop a segment's trailing dots and spaces, `String.trim()` its leading ones:
    `/svc./x` passed the / route and reached such an upstream as `/svc/x`."""
    await assert_refused_as_ambiguous(svc_gateway, upstream, target, mallory)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/svc%09/x", id="tab"),
        pytest.param("/svc%0B/x", id="vertical tab"),
        pytest.param("/svc%0C/x", id="form feed"),
        pytest.param("/svc%0d%0a/x", id="CR LF"),
        pytest.param("/s%01vc/x", id="SOH mid-segment"),
        pytest.param("/svc%1F/x", id="unit separator"),
        pytest.param("/svc%7F/x", id="DEL"),
        pytest.param("/svc%C2%85/x", id="next line (C1)"),
    ],
)
async def test_an_encoded_control_character_is_400(
    svc_gateway: Gateway, upstream: RecordingUpstream, mallory: str, target: str
) -> None:
    """Control characters are whitespace to some trims, line ends to some parsers and log writers."""
    await assert_refused_as_ambiguous(svc_gateway, upstream, target, mallory)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/%C5%BFvc/x", id="long s (Java equalsIgnoreCase: s)"),
        pytest.param("/%EF%BD%93vc/x", id="fullwidth s (NFKC: s)"),
        pytest.param("/sv%E2%85%BD/x", id="small roman numeral one hundred (NFKC: c)"),
        pytest.param("/svc/%E2%84%AAey", id="Kelvin sign (lower: k)"),
        pytest.param("/svc/l%C4%B1st", id="dotless i (upper: I)"),
        pytest.param("/svc/%C4%B0d", id="dotted capital I (lower: i)"),
        pytest.param("/svc/stra%C3%9Fe", id="sharp s (upper, casefold: ss)"),
        pytest.param("/svc/o%EF%AC%80", id="ff ligature (upper, casefold: FF)"),
        pytest.param("/public%EF%BC%8F..%EF%BC%8Fsvc", id="fullwidth solidus (NFKC: /)"),
    ],
)
async def test_a_character_that_case_mapping_or_normalisation_reads_as_ascii_is_400(
    svc_gateway: Gateway, upstream: RecordingUpstream, mallory: str, target: str
) -> None:
    """Java's `equalsIgnoreCase` reads `%C5%BFvc` (U+017F long s) as `svc`, case-insensitive matchers
    fold the Kelvin sign to `k`, NFKC turns fullwidth forms into ASCII: a route the gateway did not
    choose."""
    await assert_refused_as_ambiguous(svc_gateway, upstream, target, mallory)


@pytest.mark.parametrize(
    "target",
    [
        "/public/caf%C3%A9",
        "/public/%E6%97%A5%E6%9C%AC",
        "/public/%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82",
        "/public/%C3%85ngstr%C3%B6m",
        "/public/my%20file.txt",
        "/public/.well-known/x",
        "/public/v1.2/a..b",
    ],
)
async def test_ordinary_paths_still_pass_as_sent(
    gateway: Gateway, upstream: RecordingUpstream, target: str
) -> None:
    """Non-ASCII text that stays non-ASCII, spaces inside a segment and inner dots are no confusion."""
    status, _ = await get(gateway, target)
    assert status == 200
    assert upstream.paths == [target]
