"""The canary: a well-formed GitHub token no one else uses. It rides on many attack requests of the
security suite; it must appear in no log line, log record, exception, captured output or gateway error
body. The ledger collects everything the suite captured; tests/security/conftest.py fills it and checks
it once the session is over."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

CANARY = "gho_CANARY" + secrets.token_hex(16)


@dataclass
class CanaryLedger:
    """Everything the suite captured, by test and source, and how often the canary was sent."""

    uses: int = 0
    captured: list[tuple[str, str, str]] = field(default_factory=list)  # (test, source, text)

    def add(self, test: str, source: str, text: str) -> None:
        if text:
            self.captured.append((test, source, text))

    def leaks(self, secret: str) -> list[str]:
        """Where `secret` appears: one "test: source" line per capture holding it."""
        return [f"{test}: {source}" for test, source, text in self.captured if secret in text]


LEDGER = CanaryLedger()


def canary(suffix: str = "") -> str:
    """The canary token (with `suffix`, e.g. to make it malformed), counted as one use."""
    LEDGER.uses += 1
    return CANARY + suffix
