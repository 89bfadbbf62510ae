"""GitHub's REST API as the gateway uses it: the client (`client`: one choke point for every call,
retries, backoff, the concurrency cap) and strict readers of GitHub's answers (`answers`)."""

from .answers import IssuedToken
from .client import API_VERSION, MEDIA_TYPE, USER_AGENT, WAITING_PER_SLOT, GitHubClient, Observer

__all__ = [
    "API_VERSION",
    "MEDIA_TYPE",
    "USER_AGENT",
    "WAITING_PER_SLOT",
    "GitHubClient",
    "IssuedToken",
    "Observer",
]
