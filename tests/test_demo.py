"""`gateway demo` as `make run` starts it: the printed curl commands work (the gated routes admit a
member with their groups and refuse a non-member), a browser signs in through the fake GitHub, Ctrl-C
stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from urllib.parse import urlsplit

import aiohttp
from joserfc.jwk import KeySet
from yarl import URL

from .support.browser import form_of
from .support.processes import REPO
from .support.sockets import free_port
from .support.verifier import decode


async def test_demo_prints_curl_commands_that_work_and_stops_on_ctrl_c() -> None:
    port = free_port()
    unset = ("GITHUB_CLIENT_SECRET", "GITHUB_OAUTH_CLIENT_SECRET", "GITHUB_API_URL")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo"],
        cwd=REPO,
        env={**env, "GATEWAY_PORT": str(port), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    printed = []
    try:
        for line in proc.stdout:  # the demo prints its instructions once everything listens
            printed.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(printed)
        commands = re.findall(r"^curl (-s|-si) (\S+)(?: -H 'Authorization: Bearer (\S+)')?$", text, re.M)
        assert len(commands) >= 5, text
        statuses, refusals, groups, identity_tokens = [], [], [], []
        async with aiohttp.ClientSession() as session:
            for _, url, token in commands:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with session.get(url, headers=headers) as resp:
                    statuses.append(resp.status)
                    if resp.status == 403:
                        refusals.append((await resp.json())["error"])
                    if resp.status == 200 and "whoami" not in url and token:
                        echoed = dict((await resp.json())["headers"])
                        assert "X-Auth-User" in echoed
                        identity_tokens.append(echoed["X-Auth-Jwt"])
                        groups.append((urlsplit(url).path, echoed.get("X-Auth-Groups")))
                    if url.endswith("/jwks.json"):
                        keys = KeySet.import_key_set(await resp.json())
        # oauth token, GitHub App token, revoked, none, whoami, public, GitHub App token lacking a scope,
        # then a member and a non-member of the organisation acme (/internal) and of the team acme/sre (/ops),
        # and the identity token's public keys
        assert statuses == [200, 200, 401, 401, 200, 200, 403, 200, 403, 200, 403, 200]
        assert [decode(t, keys).claims["iss"] for t in identity_tokens] == ["gateway-demo"] * 4
        assert refusals == ["insufficient_scope", "forbidden", "forbidden"]
        # octocat is on acme/sre (so in acme), defunkt in acme only; monalisa's GitHub App is not installed
        sre = "acme,acme/sre"
        assert groups == [("/", sre), ("/", None), ("/internal", "acme"), ("/ops", sre)]
        await _browser_signs_in(re.search(r"Sign in from a browser: open (\S+) ,", text))
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped" in out


async def _browser_signs_in(found: re.Match[str] | None) -> None:
    """The demo's browser sign-in, as a browser does it: the protected page, the fake GitHub's approve
    button, and back to the page with a session cookie, showing the echo upstream's answer."""
    assert found is not None, "the demo printed no browser sign-in"
    html = {"Accept": "text/html"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=html) as browser:
        async with browser.get(found.group(1)) as consent:  # redirected to the fake GitHub's page
            assert consent.status == 200 and "/login/oauth/authorize" in consent.url.path
            form = form_of(await consent.text())
            action = consent.url.join(URL(form.action))
        async with browser.post(action, data=form.submit("approve")) as landed:
            assert landed.status == 200
            assert landed.url.path == urlsplit(found.group(1)).path
            assert dict((await landed.json())["headers"])["X-Auth-User"] == "octocat"
