"""The end user's credentials file (DESIGN §12): `$XDG_CONFIG_HOME/gateway/credentials.json` (default
`~/.config/gateway/credentials.json`), one entry per gateway URL as `normal_url` spells it.

Only its owner can read it: the directory is 0700, the file 0600, and it is never world-readable even
while it is written (a temporary file made 0600 in the same directory, then renamed over it). It is
changed under a lock (`locked`), so two `gateway auth token` refreshing at once spend a single-use
refresh token once: the second finds the first's new token. Nothing here prints or logs a token.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

FILE_MODE, DIRECTORY_MODE = 0o600, 0o700
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "access_token": str,
    "refresh_token": (str, type(None)),
    "expires_at": (int, float, type(None)),
    "refresh_token_expires_at": (int, float, type(None)),
    "client_id": str,
    "web_url": str,
}


class CredentialsUnreadable(Exception):
    """The credentials file exists but cannot be used (its text is never quoted: it holds tokens)."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a sign-in to one gateway left: the token, its refresh token, their ends (Unix times)."""

    access_token: str
    refresh_token: str | None  # None: an OAuth App token, which does not expire
    expires_at: float | None
    refresh_token_expires_at: float | None
    client_id: str  # the app that issued the token
    web_url: str  # GitHub's web URL, where the user can revoke it by hand

    def __repr__(self) -> str:
        return f"<Credentials client_id={self.client_id} expires_at={self.expires_at}>"


def credentials_path(env: Mapping[str, str]) -> Path:
    """Where the credentials file is: under $XDG_CONFIG_HOME, else ~/.config."""
    base = env.get("XDG_CONFIG_HOME") or ""
    # the XDG spec: a relative $XDG_CONFIG_HOME is invalid and is ignored
    root = Path(base) if os.path.isabs(base) else Path(env.get("HOME") or Path.home()) / ".config"
    return root / "gateway" / "credentials.json"


def normal_url(url: str) -> str:
    """A gateway's URL as the credentials file keys it: scheme and host lower-case, no default port,
    no trailing slash. ValueError, saying what is expected, for anything but an http(s) base URL."""
    expected = f"expected the gateway's base URL, such as https://gw.example.com, got {url!r}"
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(expected) from exc
    if scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError(expected)
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(expected)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown_port = "" if port is None or port == {"http": 80, "https": 443}[scheme] else f":{port}"
    return f"{scheme}://{host}{shown_port}{parts.path.rstrip('/')}"


class CredentialsFile:
    """The credentials file at `path`: read, changed under a lock, written safely."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> dict[str, Credentials]:
        """Every gateway's credentials; none when there is no file yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CredentialsUnreadable(f"{self.path} cannot be read ({exc.strerror})") from exc
        try:
            gateways = json.loads(raw)["gateways"]
            return {str(url): _credentials(entry) for url, entry in gateways.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CredentialsUnreadable(f"{self.path} is not a credentials file this program wrote") from exc

    def get(self, url: str) -> Credentials | None:
        """The credentials for a gateway (as `normal_url` spells it), if any."""
        return self.entries().get(url)

    def put(self, url: str, credentials: Credentials | None) -> None:
        """Store a gateway's credentials, or forget them (None); the caller holds `locked()`."""
        entries = self.entries()
        if credentials is None:
            entries.pop(url, None)
        else:
            entries[url] = credentials
        self._write({"gateways": {u: asdict(c) for u, c in sorted(entries.items())}})

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's lock (another process changing it waits), creating its directory."""
        self._directory()
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _directory(self) -> None:
        directory = self.path.parent
        directory.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)  # XDG's mode
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIRECTORY_MODE)
        if stat.S_IMODE(directory.stat().st_mode) != DIRECTORY_MODE:
            directory.chmod(DIRECTORY_MODE)  # mkdir's mode passes through the umask; an old one may be open

    def _write(self, content: object) -> None:
        # SECURITY: mkstemp creates the file 0600 and exclusively; os.replace swaps it in whole, so the
        # file is never readable by others, nor half-written, at any moment
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".credentials.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(content, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def _credentials(entry: object) -> Credentials:
    if not isinstance(entry, dict):
        raise TypeError("an entry is not an object")
    for name, kind in _FIELDS.items():
        if not isinstance(entry.get(name), kind):
            raise TypeError(f"{name} is not what it should be")
    return Credentials(**{name: entry[name] for name in _FIELDS})
