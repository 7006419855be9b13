"""Load InternEvo-style Python config files (or plain dicts) into a validated Config."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .base_configs import run_config_file
from .compat import infinite_to_none, no_effect_keys, normalize_parallel, present_keys, refuse_foreign_models
from .errors import ConfigError, unknown_key_error
from .overrides import apply_overrides
from .resolve import num_chunks_note, resolve, stacked_checkpoint_note
from .schema import DEFAULT_JOB_NAME, EXTRA_KEYS, OPTIONAL_SECTIONS, SCALARS, SECTIONS, Config
from .typecheck import build_section, coerce
from .validate import validate

Log = Callable[[str], None]

# Name -> type hint of everything allowed at the top level of a config (upper-case names aside).
TOP_LEVEL_HINTS: dict[str, Any] = {
    **SECTIONS,
    **{name: hint for name, (hint, _) in SCALARS.items()},
    **{name: Any for name in EXTRA_KEYS},
}
_HELPER_HINT = (
    "A helper variable in a config file must be UPPER_CASE (kept in cfg.variables) or start with '_' "
    "(ignored); lower-case module-level names are config keys."
)


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    *,
    log: Log = print,
) -> Config:
    """Execute an InternEvo-style ``.py`` config and return the validated Config.

    ``path=None`` gives all defaults. ``overrides`` are "dotted.key=VALUE" strings (``--set``).
    Keys that change nothing in JAX are reported once through ``log``.
    """
    if path is None:
        return _build({}, "<defaults>", None, overrides, log)
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"{file}: config file not found. Pass the path of an InternEvo-style .py config, e.g. configs/7b_sft.py.",
            source=str(file),
        )
    if file.suffix != ".py":
        raise ConfigError(
            f"{file}: a config must be a Python file ending in .py (InternEvo's format).", source=str(file)
        )
    return _build(_execute(file), str(file), str(file), overrides, log)


def config_from_dict(
    d: Mapping[str, Any],
    source: str = "<dict>",
    *,
    overrides: Iterable[str] = (),
    log: Log = print,
) -> Config:
    """Build a validated Config from a dict shaped like a config file's namespace."""
    if not isinstance(d, Mapping):
        raise ConfigError(
            f"{source}: a config must be a dict of config keys, got {type(d).__name__}.", source=source
        )
    return _build(dict(d), source, None, overrides, log)


def _execute(file: Path) -> dict[str, Any]:
    """Run the file as a Python module; base_configs resolves its helper and ``_base_`` imports."""
    try:
        return run_config_file(file)
    except ConfigError:
        raise
    except Exception as exc:  # a broken config is a user error: report it as one
        raise ConfigError(
            f"{file}: running the config file failed with {type(exc).__name__}: {exc}. "
            f"The file is executed as a normal Python module; fix the error there.",
            source=str(file),
        ) from exc


def _is_code(value: Any) -> bool:
    return inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value)


def _split(namespace: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate upper-case variables from config keys; drop private names, modules and code."""
    variables: dict[str, Any] = {}
    schema: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or _is_code(value):
            continue
        if name.isupper():
            variables[name] = value
        elif name == "job_name":  # the Config field name, accepted as an alias of JOB_NAME
            variables.setdefault("JOB_NAME", value)
        else:
            schema[name] = value
    return variables, schema


def _copy_dicts(value: Any) -> Any:
    """Copy nested dicts (not other objects), so overrides never touch the caller's data."""
    if isinstance(value, dict):
        return {k: _copy_dicts(v) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _build(
    namespace: dict[str, Any],
    source: str,
    source_path: str | None,
    overrides: Iterable[str],
    log: Log,
) -> Config:
    variables, schema = _split(namespace)
    refuse_foreign_models(schema, source)
    for name in schema:
        if name not in TOP_LEVEL_HINTS:
            raise unknown_key_error(source, name, TOP_LEVEL_HINTS, hint=_HELPER_HINT)
    present = present_keys(schema)  # what the file itself wrote, before defaults are filled in
    schema = _copy_dicts(schema)
    schema["parallel"] = normalize_parallel(schema.get("parallel"), source, log, final=False)
    applied = apply_overrides(schema, variables, overrides, TOP_LEVEL_HINTS, source)
    present += [".".join(ov.path) for ov in applied]
    schema["parallel"] = normalize_parallel(schema["parallel"], source, log, final=True)
    if "ckpt" in schema:
        schema["ckpt"] = infinite_to_none(schema["ckpt"], ("checkpoint_every", "oss_snapshot_freq"))

    sections = {
        name: build_section(cls, schema.get(name, {}), name, source)
        for name, cls in SECTIONS.items()
        if name in schema or name not in OPTIONAL_SECTIONS
    }
    scalars = {
        name: coerce(schema[name], hint, name, source) if name in schema else default
        for name, (hint, default) in SCALARS.items()
    }
    cfg = Config(
        job_name=coerce(variables.get("JOB_NAME", DEFAULT_JOB_NAME), str, "JOB_NAME", source),
        extra={name: schema[name] for name in EXTRA_KEYS if name in schema},
        variables={k: v for k, v in variables.items() if _jsonable(v)},
        source_path=source_path,
        **sections,
        **scalars,
    )
    resolved = resolve(cfg, source)
    validate(resolved, source)
    for note in (stacked_checkpoint_note(cfg, resolved), num_chunks_note(resolved)):
        if note:
            log(f"{source}: {note}")
    cfg = resolved
    ignored = no_effect_keys(present)
    if ignored:
        log(f"{source}: {len(ignored)} key(s) have no effect in JAX and are ignored: {', '.join(ignored)}")
    return replace(cfg, no_effect_keys=tuple(ignored))
