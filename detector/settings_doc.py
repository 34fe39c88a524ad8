"""Renders the documented default configuration from the ``Settings`` class itself.

``config/detector.toml`` is this module's output (a test keeps them equal), so the file
users copy can never disagree with the code about a key, a default or a bound.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from detector.settings import Settings

HEADER = """\
# detector: default configuration. Every key, its default and what is allowed.
# Generated from detector/settings.py (detector.settings_doc.render_default_toml);
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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
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
