"""A sub-product for other teams' tests and for the demo: a fake GitHub (`fake_github`, its state
in `fake_github_model`), an echo upstream (`echo`) and the embedded demo (`demo`).

Kept apart from the request path: nothing in the gateway imports it but the CLI, and the fake GitHub
shares no code with the GitHub client it is there to check.
"""
