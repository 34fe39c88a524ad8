"""Renders the documented default configuration from the ``Settings`` class itself.

``config/detector.toml`` is this module's output (a test keeps them equal), so the file
users copy can never disagree with the code about a key, a default or a bound.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from detector.settings import CONFIG_FILE_ENV, ENV_PREFIX, Settings

HEADER = """\
# detector: default configuration. Every key, its default and what is allowed.
# Generated from detector/settings/ (detector.settings_doc.render_default_toml);
# a test keeps this file and the code equal. Copy it, keep what you change.
#
# Precedence: CLI flags > environment (DETECTOR_SECTION__KEY, e.g.
# DETECTOR_KAFKA__BOOTSTRAP_SERVERS) > this file (--config or DETECTOR_CONFIG) > defaults.
"""


def _bounds(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        for cls, sym, attr in (
            (Ge, ">=", "ge"),
            (Gt, ">", "gt"),
            (Le, "<=", "le"),
            (Lt, "<", "lt"),
        ):
            if isinstance(m, cls):
                parts.append(f"{sym} {getattr(m, attr)}")
    ann = str(field.annotation)
    if "Literal[" in ann:
        parts.append("one of " + ann[ann.index("Literal[") + 8 :].split("]")[0])
    return ", ".join(parts)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    """A TOML literal: strings for paths, inline tables for mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    return repr(value)


def render_default_toml() -> str:
    out = [HEADER]
    for name, section_field in Settings.model_fields.items():
        factory = section_field.default_factory
        assert factory is not None
        section: BaseModel = factory()  # type: ignore[call-arg]
        out.append(f"\n[{name}]")
        out.append(f"# {(type(section).__doc__ or '').strip()}")
        for key, field in type(section).model_fields.items():
            bounds = _bounds(field)
            out.append(f"\n# {field.description}" + (f" ({bounds})" if bounds else ""))
            value = getattr(section, key)
            if value is None or isinstance(value, SecretStr):
                out.append(f"# {key} = ...")
            else:
                out.append(f"{key} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Entry:
    """One key of the effective configuration, for ``detector config show``."""

    section: str
    key: str
    value: Any  # None when unset; never a secret's value
    secret: bool  # a SecretStr (shown as set / unset only)
    origin: str  # argument | env NAME | file PATH | default
    default_is_set: bool = False  # the key has a default a TOML file cannot take away

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"


def _origin_sources(
    config_file: str | Path | None, overrides: Mapping[str, Any] | None, environ: Mapping[str, str]
) -> tuple[Path | None, dict[str, Any], Mapping[str, Any], set[str]]:
    env_names = {k.upper() for k in environ}
    path = Path(config_file) if config_file else None
    if path is None and environ.get(CONFIG_FILE_ENV):
        path = Path(environ[CONFIG_FILE_ENV])
    from_file: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as fh:
            from_file = tomllib.load(fh)
    return path, from_file, overrides or {}, env_names


def effective_entries(
    settings: Settings,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Entry]:
    """Every section and key of ``settings`` (none left out), with where its value came from."""
    env = os.environ if environ is None else environ
    path, from_file, from_args, env_names = _origin_sources(config_file, overrides, env)
    entries = []
    for section_name in Settings.model_fields:
        section: BaseModel = getattr(settings, section_name)
        for key, field in type(section).model_fields.items():
            value = getattr(section, key)
            env_name = f"{ENV_PREFIX}{section_name}__{key}".upper()
            if key in (from_args.get(section_name) or {}):
                origin = "argument"
            elif env_name in env_names:
                origin = f"env {env_name}"
            elif key in (from_file.get(section_name) or {}):
                origin = f"file {path}"
            else:
                origin = "default"
            secret = isinstance(value, SecretStr) or "SecretStr" in str(field.annotation)
            shown = ("set" if value is not None else None) if secret else value
            entries.append(
                Entry(section_name, key, shown, secret, origin, field.get_default() is not None)
            )
    return entries


def render_effective_toml(entries: list[Entry], title: str = "") -> str:
    """The effective configuration as a TOML file ``detector config check`` accepts.

    Each value's source is a trailing comment; unset keys and secrets are comments
    (a secret is never printed: it shows as set or unset).
    """
    out = [
        f"# detector: effective configuration{f' ({title})' if title else ''}.",
        "# Source of each value after it: argument, env VAR, file PATH or default.",
        "# Unset keys and secrets are commented out; this file is valid TOML.",
    ]
    section = None
    for e in entries:
        if e.section != section:
            section = e.section
            out.append(f"\n[{section}]")
        if e.secret:
            state = "set, not shown" if e.value is not None else "unset"
            out.append(f"# {e.key} = (secret: {state})  # {e.origin}")
        elif e.value is None:
            # TOML has no null: a key unset over a default cannot be written back.
            note = "; a TOML file cannot unset it" if e.default_is_set else ""
            out.append(f"# {e.key} = (unset{note})  # {e.origin}")
        else:
            shown = "{}" if e.value == {} else _toml_value(e.value)
            out.append(f"{e.key} = {shown}  # {e.origin}")
    return "\n".join(out) + "\n"


def effective_json(entries: list[Entry]) -> dict[str, Any]:
    """``{"settings": {section: {key: value}}, "sources": {"section.key": origin}}``.

    Paths are strings; unset values are null; a set secret is ``"**********"``.
    """
    settings: dict[str, dict[str, Any]] = {}
    for e in entries:
        value = "**********" if e.secret and e.value is not None else e.value
        if isinstance(value, Path):
            value = str(value)
        settings.setdefault(e.section, {})[e.key] = value
    return {"settings": settings, "sources": {e.dotted: e.origin for e in entries}}


def render_markdown_reference() -> str:
    """docs/configuration.md's reference: one table per section."""
    out = []
    for name, section_field in Settings.model_fields.items():
        factory = section_field.default_factory
        assert factory is not None
        section: BaseModel = factory()  # type: ignore[call-arg]
        out.append(f"\n**`[{name}]`**: {(type(section).__doc__ or '').strip()}\n")
        out.append("| key | default | allowed | description |")
        out.append("|---|---|---|---|")
        for key, field in type(section).model_fields.items():
            value = getattr(section, key)
            shown = (
                "(secret, unset)"
                if isinstance(value, SecretStr)
                or (value is None and "secret" in str(field.annotation).lower())
                else _toml_value(value)
                if value is not None
                else "unset"
            )
            out.append(f"| `{key}` | `{shown}` | {_bounds(field) or '-'} | {field.description} |")
    return "\n".join(out) + "\n"


def _update_readme(path: Path) -> None:
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    text = path.read_text()
    i, j = text.index(start) + len(start), text.index(end)
    path.write_text(text[:i] + "\n" + render_markdown_reference() + text[j:])


if __name__ == "__main__":
    import sys

    if "--readme" in sys.argv:
        _update_readme(Path(__file__).resolve().parents[1] / "docs" / "configuration.md")
    else:
        print(render_default_toml(), end="")
