"""What the fake GitHub's web host reads and writes: a flow's parameters (query string, form or JSON
body, as GitHub reads them), the token endpoint's answers in the encoding `Accept` asks for, its
error bodies, and the plain HTML pages a person (or a browser driven by a test) approves on.

Pure functions of a request or of values; `fake_github_oauth` decides what to answer.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from collections.abc import Mapping
from xml.sax.saxutils import escape as xml_escape

from aiohttp import web
from yarl import URL

__all__ = ["answer", "consent_page", "device_page", "oauth_error", "page", "params", "redirect_to"]

_DOCS = "https://docs.github.com"
_DEVICE = "/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#error-codes-for-the-device-flow"
_EXCHANGE = "/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"
_AUTHORIZE = "/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-authorization-request-errors"
_ERRORS = {  # GitHub's error codes of the OAuth endpoints: description, documentation
    "authorization_pending": ("The authorization request is still pending.", _DEVICE),
    "slow_down": ("Too many requests have been made in the same timeframe.", _DEVICE),
    "expired_token": ("The `device_code` has expired.", _DEVICE),
    "access_denied": ("The authorization request was denied.", _DEVICE),
    "unsupported_grant_type": ("The grant type is not supported.", _DEVICE),
    "incorrect_client_credentials": (
        "The client_id and/or client_secret passed are incorrect.",
        _EXCHANGE + "#incorrect-client-credentials",
    ),
    "incorrect_device_code": ("The device_code provided is not valid.", _DEVICE),
    "device_flow_disabled": ("Device Flow must be explicitly enabled for this App", _DEVICE),
    "bad_verification_code": (
        "The code passed is incorrect or expired.",
        _EXCHANGE + "#bad-verification-code",
    ),
    "redirect_uri_mismatch": (
        "The redirect_uri MUST match the registered callback URL for this application.",
        _AUTHORIZE + "#redirect-uri-mismatch",
    ),
    "bad_refresh_token": (
        "The refresh token passed is incorrect or expired.",
        "/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens",
    ),
    "unverified_user_email": (
        "The user must have a verified primary email.",
        _EXCHANGE + "#unverified-user-email",
    ),
    "invalid_request": (
        "PKCE: code_challenge must be 43 base64url characters and code_challenge_method S256.",
        "/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps",
    ),
}
_DENIED_AT_AUTHORIZE = ("The user has denied your application access.", _AUTHORIZE + "#access-denied")


def oauth_error(code: str, *, authorize: bool = False) -> dict[str, str | int]:
    """GitHub's body for an error of the token endpoint, or (`authorize`) the parameters of the
    authorize page's redirect back with one."""
    description, uri = _DENIED_AT_AUTHORIZE if authorize and code == "access_denied" else _ERRORS[code]
    return {"error": code, "error_description": description, "error_uri": _DOCS + uri}


async def params(request: web.Request) -> dict[str, str]:
    """A flow's parameters: the query string, then a form or JSON body over it, as GitHub reads them."""
    found = dict(request.query)
    if not request.body_exists:
        return found
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.read())
        except ValueError:
            return found
        if isinstance(data, dict):
            found.update({k: str(v) for k, v in data.items() if isinstance(v, str | int) and v is not True})
        return found
    form = await request.post()
    found.update({k: v for k, v in form.items() if isinstance(v, str)})
    return found


def answer(request: web.Request, body: Mapping[str, str | int], status: int = 200) -> web.Response:
    """The token endpoint's answer, encoded as GitHub encodes it: JSON for `Accept: application/json`,
    XML for `application/xml`, else form encoding."""
    accept = request.headers.get("Accept", "")
    if "application/json" in accept:
        return web.json_response(dict(body), status=status)
    if "application/xml" in accept:
        inner = "".join(f"<{k}>{xml_escape(str(v))}</{k}>" for k, v in body.items())
        return web.Response(status=status, text=f"<OAuth>{inner}</OAuth>", content_type="application/xml")
    text = urllib.parse.urlencode({k: str(v) for k, v in body.items()})
    return web.Response(status=status, text=text, content_type="application/x-www-form-urlencoded")


def redirect_to(target: str, query: Mapping[str, str | int | None]) -> web.Response:
    """302 to `target` with these parameters added to its query (None: left out)."""
    added = {k: str(v) for k, v in query.items() if v is not None}
    return web.Response(status=302, headers={"Location": str(URL(target).update_query(added))})


def page(title: str, body: str, status: int = 200) -> web.Response:
    """A plain HTML page; `body` is HTML already escaped."""
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return web.Response(status=status, text=doc, content_type="text/html")


def _buttons(approve: str) -> str:
    # Approve first: Enter in a field submits the form with the first button's value.
    return (
        f"<button type='submit' name='decision' value='approve' id='approve'>{html.escape(approve)}</button> "
        "<button type='submit' name='decision' value='deny' id='deny'>Cancel</button>"
    )


def _login_field(login: str) -> str:
    value = html.escape(login, quote=True)
    return f"<p><label>Signed in as <input name='login' id='login' value='{value}'></label></p>"


def device_page(user_code: str, login: str) -> web.Response:
    """The device activation page: a person enters the code their device shows and authorizes it."""
    code = html.escape(user_code, quote=True)
    return page(
        "Device Activation",
        "<form method='post' action='/login/device'>"
        + _login_field(login)
        + "<p><label>Enter the code displayed on your device "
        f"<input name='user_code' id='user_code' value='{code}' autocomplete='off' autofocus></label></p>"
        + _buttons("Authorize")
        + "</form>",
    )


def consent_page(app_name: str, scopes: list[str], ticket: str, login: str) -> web.Response:
    """The web flow's consent page: Authorize redirects back to the app with a code, Cancel with
    access_denied."""
    name = html.escape(app_name)
    asked = html.escape(", ".join(scopes) or "no scopes")
    return page(
        f"Authorize {app_name}",
        f"<p>{name} would like to access your account ({asked}).</p>"
        "<form method='post' action='/login/oauth/authorize'>"
        f"<input type='hidden' name='consent' value='{html.escape(ticket, quote=True)}'>"
        + _login_field(login)
        + _buttons(f"Authorize {app_name}")
        + "</form>",
    )
