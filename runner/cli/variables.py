"""What the variables of a run are made of: the process environment, --env-file, --vars-file
and --var (later wins), and the env.NAME references in --matrix provider files."""

from __future__ import annotations

import os

from runner.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


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


def used_names(scenario) -> set[str]:
    """Every name a --var may set in a scenario: those its `vars` define and those its
    templates refer to (steps, connect, patterns, includes' bindings, `vars` values)."""
    return _uses(scenario)[0]


def _uses(scenario) -> tuple[set[str], set[str]]:
    """(the names a --var may set, the names referred to only where an include's `vars` bind
    them: there the include's value wins, so a --var of that name has no effect). A fragment's
    own defaults bind nothing here: a --var wins over them (Step.defaults)."""
    names = set(scenario.vars) | template_names(dict(scenario.vars))
    shadowed: set[str] = set()
    for session in scenario.sessions:
        names |= template_names(session, skip=("steps", "finally_steps"))
        for step in (*session.steps, *session.finally_steps):
            # (per scope: an outer include's argument still binds a name an inner default has)
            bound = {name for binding, defaults in step.scopes() for name in binding if name not in defaults}
            inside = template_names(step, skip=("bindings", "defaults"))
            names |= (inside - bound) | template_names(step.bindings)
            shadowed |= inside & bound
    return names, shadowed - names


def template_names(root, skip: tuple[str, ...] = (), swap: Mapping[int, Any] | None = None) -> set[str]:
    """Every name the templates found anywhere in `root` refer to, walking records (their
    slots, but not the `skip` slots of `root` itself), mappings and sequences: a new templated
    field of the model is covered by itself. `swap`: id of an object found -> what to walk
    instead."""
    from runner.lang.templates import TemplateError, parse

    names: set[str] = set()
    seen: set[int] = set()
    todo: list = [root]
    while todo:
        obj = todo.pop()
        if isinstance(obj, str):
            if "{{" in obj:
                try:
                    names.update(parse(obj).names())
                except TemplateError:
                    pass
            continue
        if swap:
            obj = swap.get(id(obj), obj)
        if obj is None or isinstance(obj, (int, float, bytes)) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
        else:
            left_out = skip if obj is root else ()
            for cls in type(obj).__mro__:
                todo.extend(getattr(obj, n, None) for n in getattr(cls, "__slots__", ()) if n not in left_out)
            todo.extend(getattr(obj, "__dict__", {}).values())
    return names


def unused_vars(given, scenarios, matrix=()) -> list[str]:
    """One line per --var NAME that no scenario (nor a --matrix provider) uses, with a
    did-you-mean: a typo in a --var would otherwise be silently ignored."""
    if not given:
        return []
    used: set[str] = set()
    shadowed: set[str] = set()
    for sc in scenarios:
        uses, bound = _uses(sc)
        used |= uses
        shadowed |= bound
    for _label, values in matrix:
        used |= set(values) | template_names(values)
    known = sorted(n for n in used if not n.startswith("env."))
    out = []
    for name in dict.fromkeys(given):
        if name not in used and name in shadowed - used:
            out.append(
                f"--var {name}: the scenario uses it only inside includes whose `vars` set it, "
                "and those values win there"
            )
        elif name not in used:
            import difflib  # only for the hint

            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            out.append(f"--var {name}: no scenario uses a variable of that name{hint}")
    return out


def unneeded_env(scenario, supplied: set[str]) -> set[str]:
    """Environment variables the scenario names only in `vars` entries, or an included fragment's
    own defaults, that --var or every --matrix provider supplies (`password: "{{
    env.MAILRUN_PASSWORD }}"` with a provider's `password`): nobody needs them set, and
    --sandbox need not invent them."""
    if not supplied:
        return set()
    overridden = {n for n in scenario.vars if n in supplied}
    gone = [{n: scenario.vars[n] for n in overridden}]
    pruned: dict[int, dict] = {}  # id(a fragment's bindings) -> them without the supplied defaults
    for session in scenario.sessions:
        for step in (*session.steps, *session.finally_steps):
            for binding, defaults in step.scopes():
                given = defaults & supplied
                if given and id(binding) not in pruned:
                    pruned[id(binding)] = {n: v for n, v in binding.items() if n not in given}
                    gone.append({n: binding[n] for n in given})
    if not overridden and not pruned:
        return set()
    kept = {n: v for n, v in scenario.vars.items() if n not in overridden}
    still = template_names((scenario.sessions, kept), swap=pruned)
    return {n[4:] for n in template_names(gone) - still if n.startswith("env.")}


def supplied_names(variables, matrix) -> set[str]:
    """The names every run gets from the command line: --var/--vars-file, and those every
    --matrix provider defines."""
    common = set.intersection(*(set(values) for _, values in matrix)) if matrix else set()
    return set(variables) | common
