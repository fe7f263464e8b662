"""Secrets named in the config: from an environment variable (``*_env``), a file
(``*_file``) or a systemd credential (``*_credential``: a name under
``$CREDENTIALS_DIRECTORY``), never inline. Values are stripped of surrounding
whitespace (a file's trailing newline); an empty one is an error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from relay.config.validate import Section, show

SOURCES: Final = ("_env", "_file", "_credential")


def _read(path: Path, key: str, shown: str, sec: Section) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else None
        sec.error(key, f"cannot read {shown}: {reason or exc.__class__.__name__}")
        return None


def read_secrets(sec: Section, env: Mapping[str, str], base: Path, prefix: str) -> tuple[str, ...]:
    """Every value ``<prefix>_env``, ``<prefix>_file`` and ``<prefix>_credential`` name."""
    env_key, file_key, cred_key = (prefix + s for s in SOURCES)
    found: list[str] = []
    for var in sec.strings(env_key, ()):
        if not (from_env := env.get(var, "").strip()):
            sec.error(env_key, f"environment variable {var} is not set")
        else:
            found.append(from_env)
    for name in sec.strings(file_key, ()):
        from_file = _read(base / name, file_key, name, sec)
        if from_file == "":
            sec.error(file_key, f"{name} is empty")
        if from_file:
            found.append(from_file)
    for name in sec.strings(cred_key, ()):
        directory = env.get("CREDENTIALS_DIRECTORY", "")
        if not name or "/" in name or name in (".", ".."):
            sec.error(cred_key, f"expected a credential's name, got {show(name)}")
        elif not directory:
            sec.error(
                cred_key,
                f"credential {name}: $CREDENTIALS_DIRECTORY is not set"
                " (systemd sets it for LoadCredential= / SetCredential=)",
            )
        elif (value := _read(Path(directory) / name, cred_key, f"credential {name}", sec)) == "":
            sec.error(cred_key, f"credential {name} is empty")
        elif value:
            found.append(value)
    return tuple(found)


def secret_path(sec: Section, env: Mapping[str, str], base: Path, prefix: str) -> str | None:
    """The file ``<prefix>_file`` or ``<prefix>_credential`` names (one of them), for
    settings read as files (certificates, keys): None if neither is given."""
    file_key, cred_key = prefix + "_file", prefix + "_credential"
    if sec.has(file_key) and sec.has(cred_key):
        sec.text(file_key), sec.text(cred_key)  # read: named once, not as unknown keys too
        sec.error(cred_key, f"give {file_key} or {cred_key}, not both")
        return None
    if sec.has(file_key):
        name = sec.text(file_key)
        return str(base / name)
    if not sec.has(cred_key):
        return None
    name = sec.text(cred_key)
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if not name or "/" in name or name in (".", ".."):
        sec.error(cred_key, f"expected a credential's name, got {show(name)}")
    elif not directory:
        sec.error(cred_key, f"credential {name}: $CREDENTIALS_DIRECTORY is not set")
    else:
        return str(Path(directory) / name)
    return None
