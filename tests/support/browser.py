"""A browser's part in a test: read an HTML page's form and submit it by one of its buttons, as a
browser sends it (the form's fields, and the clicked button's name and value)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, tuple[str, str]] = field(default_factory=dict)  # id → (name, value)

    def submit(self, button: str, **typed: str) -> dict[str, str]:
        """What a browser posts when a person types `typed` into fields and clicks `button` (its id)."""
        unknown = set(typed) - set(self.fields)
        assert not unknown, f"the form has no fields {unknown}"
        name, value = self.buttons[button]
        return {**self.fields, **typed, name: value}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif tag == "input" and self.forms and "name" in a:
            self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("type", "submit") == "submit":
            self.forms[-1].buttons[a.get("id", "")] = (a.get("name", ""), a.get("value", ""))


def form_of(page: str) -> Form:
    """The one form of an HTML page."""
    parser = _FormParser()
    parser.feed(page)
    [form] = parser.forms
    return form
