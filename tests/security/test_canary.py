"""Secret hygiene: the canary token rides on many attack requests; it must appear in no access-log line,
log record, exception, captured output or error body (README: Logs, issue 4). The check runs once the session
is over (tests/security/conftest.py), whatever ran; this battery sends the canary down every path, so the
check means something when this module runs alone too.
"""

from __future__ import annotations

import hashlib

from ..support.canary import CANARY, canary
from ..support.sockets import exchange, raw, statuses
from ..support.world import GatewayFactory, World


async def test_the_canary_token_appears_in_no_log_output_or_error_body(
    start_gateway: GatewayFactory, world: World
) -> None:
    """Token leaks through logs, error pages and exception messages (CWE-532)."""
    gateway = await start_gateway(rate_limit={"failed_auth_per_minute": 100})
    world.github.add_token("alice", 7, ["repo"], token=canary())
    auth = f"Authorization: Bearer {canary()}"
    battery = [
        (raw("GET", "/svc", auth), 200),
        (raw("GET", "/_gateway/whoami", auth), 200),
        (raw("GET", "/_gateway/auth", auth, "X-Original-URI: /svc?access_token=" + canary()), 200),
        (raw("GET", "/admin", auth), 403),
        (raw("GET", "/svc", f"Authorization: token {canary('!')}"), 401),
        (raw("GET", "/svc", f"Authorization: Bearer {canary('a' * 300)}"), 401),
        (raw("GET", "/svc", auth, auth), 400),
        (raw("GET", f"/svc?access_token={canary()}"), 401),
        (raw("GET", "/svc", f"Cookie: token={canary()}"), 401),
        (raw("GET", "/svc", f"Authorization: Bearer {canary('A' * 9000)}"), 400),
        (f"GET /svc HTTP/1.1\nHost: x\nAuthorization: Bearer {canary()}\n\n".encode(), 400),
        (raw("GET", "/svc", auth, f"X-Note: a\r{canary()}"), 400),
        (raw("POST", "/_gateway/logout", auth), 200),
        (raw("GET", "/svc", auth), 401),  # revoked by the logout
    ]
    answers = []
    for message, status in battery:
        answer = await exchange(gateway.port, message)
        assert statuses(answer) == [status], message[:80]
        answers.append(answer)
    assert [a for a in answers if CANARY.encode() in a] == []

    token_id = hashlib.sha256(CANARY.encode()).hexdigest()[:12]
    assert token_id in gateway.log_text()  # the canary's requests were logged, by their token_id only
