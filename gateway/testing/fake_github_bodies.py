"""The JSON bodies of the fake GitHub's membership answers, in the shapes of GitHub's OpenAPI description
(organization-simple, org-membership, team-full, team-membership, full-repository, installation,
installation-token, repository-collaborator-permission). Pure functions of `fake_github_orgs` records.

`site` is the fake's web origin (html_url), `api` its API root (`site` or `site/api/v3`).
"""

from __future__ import annotations

import base64

from .fake_github_model import iso, simple_user
from .fake_github_orgs import REPO_ROLES, GitHubApp, Installation, Member, Org, Repo, Team

# the legacy `permission` of a collaborator: GitHub's three base roles and none
_LEGACY = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read"}
_REPO_URLS = (  # key_url: tail after the repository's URL
    ("archive", "/{archive_format}{/ref}"),
    ("assignees", "/assignees{/user}"),
    ("blobs", "/git/blobs{/sha}"),
    ("branches", "/branches{/branch}"),
    ("collaborators", "/collaborators{/collaborator}"),
    ("comments", "/comments{/number}"),
    ("commits", "/commits{/sha}"),
    ("compare", "/compare/{base}...{head}"),
    ("contents", "/contents/{+path}"),
    ("contributors", "/contributors"),
    ("deployments", "/deployments"),
    ("downloads", "/downloads"),
    ("events", "/events"),
    ("forks", "/forks"),
    ("git_commits", "/git/commits{/sha}"),
    ("git_refs", "/git/refs{/sha}"),
    ("git_tags", "/git/tags{/sha}"),
    ("hooks", "/hooks"),
    ("issue_comment", "/issues/comments{/number}"),
    ("issue_events", "/issues/events{/number}"),
    ("issues", "/issues{/number}"),
    ("keys", "/keys{/key_id}"),
    ("labels", "/labels{/name}"),
    ("languages", "/languages"),
    ("merges", "/merges"),
    ("milestones", "/milestones{/number}"),
    ("notifications", "/notifications{?since,all,participating}"),
    ("pulls", "/pulls{/number}"),
    ("releases", "/releases{/id}"),
    ("stargazers", "/stargazers"),
    ("statuses", "/statuses/{sha}"),
    ("subscribers", "/subscribers"),
    ("subscription", "/subscription"),
    ("tags", "/tags"),
    ("teams", "/teams"),
    ("trees", "/git/trees{/sha}"),
)
_EPOCH = iso(1_600_000_000)  # when every fake organisation, team and repository was created


def _node(kind: str, number: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()


def organization(site: str, api: str, org: Org) -> dict[str, object]:
    """GitHub's `organization-simple`."""
    url = f"{api}/orgs/{org.login}"
    return {
        "login": org.login,
        "id": org.id,
        "node_id": _node("Organization", org.id),
        "url": url,
        "repos_url": f"{url}/repos",
        "events_url": f"{url}/events",
        "hooks_url": f"{url}/hooks",
        "issues_url": f"{url}/issues",
        "members_url": f"{url}/members{{/member}}",
        "public_members_url": f"{url}/public_members{{/member}}",
        "avatar_url": f"{site}/avatars/u/{org.id}",
        "description": None,
    }


def org_membership(
    site: str, api: str, org: Org, member: Member, login: str, user_id: int
) -> dict[str, object]:
    """GitHub's `org-membership` of the authenticated user."""
    return {
        "url": f"{api}/orgs/{org.login}/memberships/{login}",
        "state": member.state,
        "role": member.role,
        "organization_url": f"{api}/orgs/{org.login}",
        "organization": organization(site, api, org),
        "user": simple_user(site, api, login, user_id),
        "permissions": {"can_create_repository": member.role == "admin"},
    }


def _team_simple(site: str, api: str, org: Org, team: Team) -> dict[str, object]:
    url = f"{api}/organizations/{org.id}/team/{team.id}"
    return {
        "id": team.id,
        "node_id": _node("Team", team.id),
        "url": url,
        "members_url": f"{url}/members{{/member}}",
        "name": team.name,
        "description": None,
        "permission": "pull",
        "privacy": "closed",
        "notification_setting": "notifications_enabled",
        "html_url": f"{site}/orgs/{org.login}/teams/{team.slug}",
        "repositories_url": f"{url}/repos",
        "slug": team.slug,
        "type": "organization",
    }


def team(site: str, api: str, org: Org, team: Team, members_count: int) -> dict[str, object]:
    """GitHub's `team-full`, as /user/teams lists them (with the organisation and the parent team)."""
    organisation = organization(site, api, org) | {
        "html_url": f"{site}/{org.login}",
        "has_organization_projects": True,
        "has_repository_projects": True,
        "public_repos": 0,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "type": "Organization",
        "created_at": _EPOCH,
        "updated_at": _EPOCH,
        "archived_at": None,
    }
    return _team_simple(site, api, org, team) | {
        "parent": None if team.parent is None else _team_simple(site, api, org, team.parent),
        "created_at": _EPOCH,
        "updated_at": _EPOCH,
        "members_count": members_count,
        "repos_count": 0,
        "organization": organisation,
    }


def team_membership(api: str, team: Team, member: Member, login: str) -> dict[str, object]:
    """GitHub's `team-membership`."""
    return {"url": f"{api}/teams/{team.id}/memberships/{login}", "role": member.role, "state": member.state}


def permissions(role: str | None) -> dict[str, bool]:
    """The five booleans GitHub derives from a repository role (None: no access)."""
    rank = -1 if role is None else REPO_ROLES.index(role)
    return {
        "admin": rank >= 4,
        "maintain": rank >= 3,
        "push": rank >= 2,
        "triage": rank >= 1,
        "pull": rank >= 0,
    }


def repository(
    site: str, api: str, repo: Repo, owner: dict[str, object], role: str | None, *, for_user: bool
) -> dict[str, object]:
    """GitHub's `full-repository`; `permissions` (the caller's) only when a user asks."""
    url = f"{api}/repos/{repo.full_name}"
    body: dict[str, object] = {
        "id": repo.id,
        "node_id": _node("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "owner": owner,
        "private": repo.private,
        "visibility": "private" if repo.private else "public",
        "html_url": f"{site}/{repo.full_name}",
        "description": None,
        "fork": False,
        "url": url,
        "git_url": f"git://{site.partition('://')[2]}/{repo.full_name}.git",
        "ssh_url": f"git@{site.partition('://')[2]}:{repo.full_name}.git",
        "clone_url": f"{site}/{repo.full_name}.git",
        "svn_url": f"{site}/{repo.full_name}",
        "mirror_url": None,
        "homepage": None,
        "language": None,
        "default_branch": "main",
        "license": None,
        "pushed_at": _EPOCH,
        "created_at": _EPOCH,
        "updated_at": _EPOCH,
        **{key: False for key in ("archived", "disabled", "has_pages", "has_discussions")},
        **{key: True for key in ("has_issues", "has_projects", "has_wiki")},
        **dict.fromkeys(
            ("forks", "forks_count", "open_issues", "open_issues_count", "size", "stargazers_count"), 0
        ),
        **dict.fromkeys(("watchers", "watchers_count", "network_count", "subscribers_count"), 0),
        **{f"{key}_url": url + tail for key, tail in _REPO_URLS},
    }
    if owner["type"] == "Organization":
        body["organization"] = owner
    if for_user:
        body["permissions"] = permissions(role)
    return body


def collaborator_permission(
    site: str, api: str, login: str, user_id: int, role: str | None
) -> dict[str, object]:
    """GitHub's `repository-collaborator-permission`: the role and the legacy base permission."""
    role_name = role or "none"
    user = simple_user(site, api, login, user_id) | {"role_name": role_name, "permissions": permissions(role)}
    return {"permission": _LEGACY.get(role_name, "none"), "role_name": role_name, "user": user}


def installation(
    site: str, api: str, app: GitHubApp, inst: Installation, account: dict[str, object]
) -> dict[str, object]:
    """GitHub's `installation`."""
    return {
        "id": inst.id,
        "account": account,
        "repository_selection": "all" if inst.repositories is None else "selected",
        "access_tokens_url": f"{api}/app/installations/{inst.id}/access_tokens",
        "repositories_url": f"{api}/installation/repositories",
        "html_url": f"{site}/organizations/{inst.account}/settings/installations/{inst.id}",
        "app_id": app.id,
        "client_id": app.client_id,
        "app_slug": app.slug,
        "target_id": account["id"],
        "target_type": account["type"],
        "permissions": dict(inst.permissions),
        "events": [],
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.created_at),
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": None,
    }


def installation_token(token: str, expires_at: float, inst: Installation) -> dict[str, object]:
    """GitHub's `installation-token` (201 of create-installation-access-token)."""
    return {
        "token": token,
        "expires_at": iso(expires_at),
        "permissions": dict(inst.permissions),
        "repository_selection": "all" if inst.repositories is None else "selected",
    }


def github_app(site: str, api: str, app: GitHubApp, installations: int) -> dict[str, object]:
    """GitHub's `integration`: the authenticated app, owned here by a made-up organisation."""
    return {
        "id": app.id,
        "slug": app.slug,
        "node_id": _node("Integration", app.id),
        "client_id": app.client_id,
        "owner": simple_user(site, api, "fake-github-apps", 1, "Organization"),
        "name": app.slug,
        "description": None,
        "external_url": site,
        "html_url": f"{site}/apps/{app.slug}",
        "created_at": _EPOCH,
        "updated_at": _EPOCH,
        "permissions": {"members": "read", "metadata": "read"},
        "events": [],
        "installations_count": installations,
    }
