"""What the variables of a run are made of: the process environment, --env-file, --vars-file
and --var (later wins), and the env.NAME references in --matrix provider files."""

from __future__ import annotations

import os

from runner.errors import UsageError


def read_variables(args) -> tuple[dict[str, str], dict[str, str]]:
    """(env, variables) from the process environment, --env-file, --vars-file and --var.
    The loader (and PyYAML) is imported only when a file is given."""
    env = dict(os.environ)
    if args.env_file:
        from runner.load.varfiles import load_env_file

        for f in args.env_file:
            env.update(load_env_file(f))
    variables: dict[str, str] = {}
    if args.vars_file:
        from runner.load.varfiles import load_vars_file

        for f in args.vars_file:
            variables.update(load_vars_file(f))
    for name, value in args.var:
        variables[name] = value
    return env, variables


def matrix_env_refs(matrix) -> dict[str, str]:
    """env.NAME references in provider vars files (their values are templates):
    NAME -> 'provider:var' (the first that needs it)."""
    from runner.lang.templates import TemplateError, parse

    refs: dict[str, str] = {}
    for label, values in matrix:
        for var, value in values.items():
            if not isinstance(value, str):
                continue
            try:
                names = parse(value).required_names()
            except TemplateError as exc:
                raise UsageError(f"matrix {label}: {var}: {exc}") from None
            for ref in sorted(names):
                if ref.startswith("env."):
                    refs.setdefault(ref[4:], f"{label}: {var}")
    return refs
