"""Reading `gateway.yaml`: `${VAR}` interpolation, the YAML loader, and every problem turned into one
line of ``FILE: key.path: what was expected`` (README: Configuration). Nothing here has side effects beyond
reading the file and the environment.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from ..errors import ConfigError
from .models import Config, Loc

DEFAULT_PATH = "gateway.yaml"
ENV_PATH = "GATEWAY_CONFIG"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _location(path: Loc) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def interpolate(tree: Any, env: Mapping[str, str], problems: list[tuple[Loc, str]], path: Loc = ()) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; note each unset variable at its path.

    As in the shell, the default also applies when the variable is set but empty.
    """
    if isinstance(tree, dict):
        return {k: interpolate(v, env, problems, (*path, k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [interpolate(v, env, problems, (*path, i)) for i, v in enumerate(tree)]
    if not isinstance(tree, str):
        return tree

    def substitute(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value or (value is not None and default is None):
            return value
        if default is not None:
            return default
        expected = f"expected it set, or a default as in ${{{name}:-value}}"
        problems.append((path, f"environment variable {name} is not set: {expected}"))
        return m.group(0)

    return _VAR.sub(substitute, tree)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and first.setdefault(key, key_node) is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"found key {key!r} again (first on line {first[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # SECURITY: str(exc) quotes the offending source line, which may hold a secret: use the mark only
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = " ".join(filter(None, [exc.problem, exc.context]))
        return f"line {mark.line + 1}, column {mark.column + 1}: expected valid YAML, {what}"
    return f"(top level): expected valid YAML, {exc}".replace("\n", " ")


_SECRET_KEYS = frozenset({"client_secret"})
_UNION_TAGS = {"int", "str", "float", "bool", "function-after", "function-before"}
_EXPECTED = {
    "missing": "required key is missing: expected a value",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
}


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (model := _model_in(arg)) is not None:
            return model
    return None


def _sort_key(loc: Loc) -> list[tuple[int, str]]:
    """Problems in the order the models list their fields, list items by index."""
    key: list[tuple[int, str]] = []
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int):
            key.append((part, ""))
            continue
        fields = list(model.model_fields) if model else []
        key.append((fields.index(part) if part in fields else len(fields), part))
        model = _model_in(model.model_fields[part].annotation) if model and part in fields else None
    return key


def _known_keys(loc: Loc) -> list[str]:
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, str):
            field = model.model_fields.get(part) if model else None
            model = _model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _describe(err: Mapping[str, Any]) -> tuple[Loc, str]:
    # pydantic names the member of a union it tried (`int`, `literal['auto']`): keep the user's path only
    loc: Loc = tuple(p for p in err["loc"] if isinstance(p, int) or ("[" not in p and p not in _UNION_TAGS))
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind in ("value_error", "config"):
        return loc, msg
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return loc, f"unknown key: expected one of {', '.join(known)}{hint}"
    if kind == "too_short":
        items = "a non-empty value" if isinstance(value, str) else f"at least {ctx['min_length']} item(s)"
        return loc, f"expected {items}"
    if kind in _EXPECTED:
        msg = _EXPECTED[kind]
    elif kind == "greater_than_equal":
        msg = f"expected a number of at least {ctx['ge']}"
    elif kind == "less_than_equal":
        msg = f"expected a number of at most {ctx['le']}"
    elif kind == "literal_error":
        msg = f"expected {ctx['expected']}"
    elif msg.startswith("Input should be "):
        msg = "expected " + msg.removeprefix("Input should be ")
    else:
        msg = f"expected a valid value ({msg})"
    # SECURITY: a secret's value is never echoed, whatever is wrong with it
    if (
        kind != "missing"
        and not isinstance(value, dict | list)
        and not _SECRET_KEYS.intersection(map(str, loc))
    ):
        msg = f"{msg}, got {value!r}"
    return loc, msg


def _errors(exc: ValidationError) -> list[tuple[Loc, str]]:
    errors = exc.errors(include_url=False)
    locs = [e["loc"] for e in errors]
    # a tuple whose only item failed is also reported as too short: keep the item's error only
    return [
        _describe(e)
        for e in errors
        if not (
            e["type"] == "too_short" and any(o != e["loc"] and o[: len(e["loc"])] == e["loc"] for o in locs)
        )
    ]


def _secrets(tree: Mapping[str, Any]) -> list[str]:
    github = tree.get("github")
    apps = github.get("apps") if isinstance(github, dict) else None
    if not isinstance(apps, list):
        return []
    return [s for a in apps if isinstance(a, dict) and isinstance(s := a.get("client_secret"), str) and s]


def parse(text: str, *, source: str, env: Mapping[str, str] | None = None) -> Config:
    """A Config from YAML text; every problem is reported at once, prefixed by `source`."""
    try:
        tree = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: {_yaml_problem(exc)}"]) from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(
            [f"{source}: (top level): expected a mapping of sections, got {type(tree).__name__}"]
        )
    problems: list[tuple[Loc, str]] = []
    tree = interpolate(tree, os.environ if env is None else env, problems)
    unset = [loc for loc, _ in problems]
    try:
        config: Config | None = Config.model_validate(tree)
    except ValidationError as exc:
        # a value still holding an unset ${VAR} has already been reported: skip what pydantic says of it
        problems += [(loc, msg) for loc, msg in _errors(exc) if not any(loc[: len(u)] == u for u in unset)]
        config = None
    if problems or config is None:
        lines = [
            f"{source}: {_location(loc)}: {msg}"
            for loc, msg in sorted(problems, key=lambda p: _sort_key(p[0]))
        ]
        for secret in _secrets(tree):
            # SECURITY: belt and braces: a secret quoted anywhere in a message is masked
            pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
            lines = [pattern.sub("***", line) for line in lines]
        raise ConfigError(list(dict.fromkeys(lines)))
    return config


def resolve_path(path: str | None) -> Path:
    """The config file to use: the argument, else ``$GATEWAY_CONFIG``, else ``./gateway.yaml``."""
    return Path(path or os.environ.get(ENV_PATH) or DEFAULT_PATH)


def load(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file."""
    file = resolve_path(None if path is None else os.fspath(path))
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError([f"{file}: cannot read ({reason}): expected a readable UTF-8 YAML file"]) from exc
    return parse(text, source=str(file), env=env)
