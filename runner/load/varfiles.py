"""--vars-file (a YAML mapping of names to scalars) and --env-file (KEY=VALUE lines) readers."""

from __future__ import annotations

import re
from pathlib import Path

from runner.errors import ScenarioError
from runner.lang.templates import NAME_FULL
from runner.load.yaml_doc import describe_type, read_doc, read_file

__all__ = ["load_env_file", "load_vars_file"]


def load_vars_file(path: str | Path) -> dict[str, str]:
    """A YAML mapping of names to scalars (strings, numbers, true/false) -> name -> str."""
    doc = read_doc(path, what="a vars file")
    problems = [f"{doc.display}:{line}:{col}: {text}" for line, col, text in doc.problems]
    out: dict[str, str] = {}
    for k, v in doc.data.items():
        if not NAME_FULL.match(k):
            problems.append(doc.msg((k,), f"{k!r} is not a variable name", key=True))
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, (str, int, float)):
            out[k] = str(v)
        else:
            problems.append(doc.msg((k,), f"expected a string or number, got {describe_type(v)}"))
    if problems:
        raise ScenarioError(problems)
    return out


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def load_env_file(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments, blank lines, optional `export `, optional quotes."""
    display = str(path)
    try:
        text = read_file(path, "an env file").decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{display}: the file is not UTF-8") from None
    out: dict[str, str] = {}
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            problems.append(f"{display}:{n}: expected KEY=VALUE")
            continue
        key, value = m.group(1), m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            q = value[0]
            value = value[1:-1]
            if q == '"':
                value = re.sub(
                    r"\\([\\\"nrt$])",
                    lambda mm: {"n": "\n", "r": "\r", "t": "\t"}.get(mm.group(1), mm.group(1)),
                    value,
                )
        elif value[:1] in ("'", '"'):
            problems.append(f"{display}:{n}: {key}: unterminated quote")
            continue
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[key] = value
    if problems:
        raise ScenarioError(problems)
    return out
