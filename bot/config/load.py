"""Loading the config: YAML, ``${VAR}`` expansion (each value remembered as a secret), and validation errors
turned into lines that name the key and say how to fix it (never echoing the value)."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bot.config.model import Config
from bot.durations import DURATION_HINT
from bot.secrets import SECRETS


class ConfigError(Exception):
    """A configuration problem a person can fix; ``str()`` is the whole message."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, path: str, environ: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", environ) for i, v in enumerate(value)]
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in environ:
                val = environ[var]
                if val:
                    SECRETS.add(val)
                return val
            if default is not None:
                return default
            raise ConfigError(
                f"{path}: environment variable {var} is not set: export {var}=... before starting "
                f"the bot, or write ${{{var}:-default}} to give a default"
            )

        return _VAR.sub(repl, value)
    return value


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model a location points into (for 'did you mean')."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                # dict key (environment or standby name): descend into the value type
                continue
            ann = field.annotation
            args = getattr(ann, "__args__", ())
            if ann is not None and isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
            elif args:
                cand = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
                model = cand[0] if cand else None
            else:
                model = None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


# pydantic's words for a value of the wrong type, and how to write it instead
_TYPE_HINTS = {
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "int_from_float": "write a whole number",
    "float_parsing": "write a number",
    "float_type": "write a number",
    "string_type": "write it as text (in quotes if YAML reads it as a number or true/false)",
    "list_type": "write a YAML list, e.g. [a, b] or one '- item' per line",
    "dict_type": "write a YAML mapping, one 'name: value' per line",
    "model_type": "write a YAML mapping, one 'key: value' per line",
    "model_attributes_type": "write a YAML mapping, one 'key: value' per line",
}


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after[_dsn(), str]",))
        key = _loc(loc) or "(top level)"
        kind = err["type"]
        msg = err["msg"]
        if kind == "extra_forbidden":
            known = _known_fields(loc)
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else f"known keys here: {', '.join(known)}"
            lines.append(f"{key}: unknown key: {hint}")
            continue
        if kind == "missing":
            lines.append(f"{key}: required but missing: add it to the file")
            continue
        msg = msg.removeprefix("Value error, ")
        if "duration" in msg and DURATION_HINT not in msg:
            msg += f" ({DURATION_HINT})"
        if kind in _TYPE_HINTS:
            msg = f"{msg}: {_TYPE_HINTS[kind]}"
        # never echo the input: it may be a DSN with a password
        lines.append(f"{key}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, environ: dict[str, str] | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping with at least 'environments:'")
    expanded = _expand(data, "", dict(os.environ if environ is None else environ))
    try:
        return Config.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> Config:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist: pass --config with the path of your YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise ConfigError(f"{p} is empty: it needs at least 'environments:' with one environment and its dsn")
    return parse_config(data, environ)
