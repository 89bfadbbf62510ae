"""Browser sign-in once in a real browser (DESIGN §12): headless Chromium, driven by Selenium, goes from
a protected page through the fake GitHub's approve button and back, and sees the upstream's answer.
A screenshot of that answer is kept in `$TEST_ARTIFACTS` (default `.artifacts/`).

Skipped with the reason where Chromium, ChromeDriver or Selenium is missing: `make servers` installs
Debian's chromium and chromium-driver when it can.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support.processes import REPO
from .support.sockets import free_port
from .support.world import GatewayFactory, World

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (make test installs it)"
)
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        "Chromium and ChromeDriver are not installed: apt-get install chromium chromium-driver"
        " (make servers does when it can)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402 (after the skip: only where selenium is)
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / ".artifacts"))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # as root, here and in CI
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # this machine's network is closed: without these, Chromium keeps trying Google's hosts
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


async def test_a_real_browser_signs_in_with_the_approve_button(
    browser: Any, start_gateway: GatewayFactory, world: World
) -> None:
    world.github.add_token("alice", 7, ["read:org"])
    world.github.flows.signed_in = "alice"  # who is signed in at the fake GitHub: the approve page asks
    port = free_port()
    await start_gateway(
        port=port,
        server={"public_url": f"http://127.0.0.1:{port}"},
        sessions={"cookie_secret": "a session secret of at least thirty-two characters"},
        routes=[{"path": "/", "upstream": world.upstream_url, "browser_login": True}],
    )

    def sign_in() -> dict[str, Any]:
        browser.get(f"http://127.0.0.1:{port}/dashboard?tab=1")
        approve = WebDriverWait(browser, 20).until(
            expected_conditions.element_to_be_clickable((By.ID, "approve"))
        )
        assert browser.current_url.startswith(world.github_url + "/login/oauth/authorize")
        approve.click()
        WebDriverWait(browser, 20).until(expected_conditions.url_contains(f"127.0.0.1:{port}/dashboard"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "browser-sign-in.png"))
        page = browser.find_element(By.TAG_NAME, "body").text
        return dict(json.loads(page))

    echoed = await asyncio.to_thread(sign_in)

    assert echoed["path"] == "/dashboard?tab=1"
    headers = dict(echoed["headers"])
    assert headers["X-Auth-User"] == "alice"
    assert "gateway_session" not in headers.get("Cookie", "")
    assert (ARTIFACTS / "browser-sign-in.png").stat().st_size > 0
