"""A sub-product for other teams' tests and for the demo: a fake GitHub (`fake_github`; its OAuth
records in `fake_github_model`; organisations and the GitHub App in `fake_github_orgs`, their endpoints
in `fake_github_rest`, who calls them in `fake_github_callers`, the bodies in `fake_github_bodies`; its
command in `fake_github_cli`), an echo upstream (`echo`) and the embedded demo (`demo`).

Kept apart from the request path: nothing in the gateway imports it but the CLI, and the fake GitHub
shares no code with the GitHub client it is there to check.
"""
