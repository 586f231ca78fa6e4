"""`include:` steps: finding the fragment, refusing cycles, and the scope its steps see.

The fragment's own steps are checked by runner.load.steps (which calls open_include); its
vars (the include's `vars:` over the fragment's defaults) are rendered in the including
scope and bound for its steps only, while its captures survive it; a default gives way at run
time to a value the run is given from outside the file (Step.defaults).
"""

from __future__ import annotations

import os

from runner.errors import ScenarioError
from runner.load.checker import Scope
from runner.load.yaml_doc import is_fragment_data, read_doc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runner.load.checker import Checker
    from runner.load.yaml_doc import Doc, Path_
    from runner.model.scenario import Location

__all__ = ["MAX_INCLUDE_DEPTH", "MAX_STEPS", "count_expanded", "open_include", "within_budget"]

#: includes within includes, at most (a chain 40 deep is a mistake or an attack)
MAX_INCLUDE_DEPTH = 32
#: steps and include steps one file may expand to (a fragment that includes the next level
#: twice doubles at each level: 30 levels would be a billion steps)
MAX_STEPS = 100_000


def count_expanded(chk: Checker, doc: Doc, path: Path_) -> bool:
    """Counts one more step (or include) of the file being loaded; False, after reporting it
    once, when that passes MAX_STEPS: the caller then builds nothing more."""
    chk.expanded += 1
    if chk.expanded <= MAX_STEPS:
        return True
    if chk.expanded == MAX_STEPS + 1:
        chk.add(
            doc,
            path,
            f"the scenario expands to more than {MAX_STEPS} steps (includes included more than "
            "once count each time): is an include repeated at every level?",
        )
    return False


def open_include(
    chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, loc: Location
) -> tuple[Doc, Scope] | None:
    """The fragment an include step names (read, validated and registered once) and the scope
    for its steps; None after reporting why it cannot be included."""
    target = raw["include"]
    here = f"{doc.display}:{loc.line}"
    disp = os.path.normpath(os.path.join(os.path.dirname(doc.display), target))
    real = _resolved(chk, doc, target)

    def chain_text() -> str:  # (for a message only: a fan-out opens includes by the thousand)
        return " -> ".join([c[1] for c in scope.chain] + [here, disp])

    if len(scope.chain) >= MAX_INCLUDE_DEPTH:
        chain = " -> ".join([c[1] for c in scope.chain[:3]] + ["...", here, disp])
        chk.add(
            doc,
            path + ("include",),
            f"{chain}: includes nested more than {MAX_INCLUDE_DEPTH} deep (the limit)",
        )
        return None
    if (
        real == doc.real
        or real in {c[0] for c in scope.chain}  # (a Path's hash is kept: a set is cheap)
        or (not scope.chain and real == chk.order[0].real)
    ):
        chk.add(doc, path + ("include",), f"{chain_text()}: include cycle")
        return None
    frag = chk.docs.get(real)
    if frag is None:
        frag = _read_fragment(chk, doc, path, real, disp, chain_text())
        if frag is None:
            return None
    elif chk.kinds.get(real) != "fragment":
        chk.add(doc, path + ("include",), f"{chain_text()}: not a fragment")
        return None
    dependency = (str(doc.base_dir / target), str(real), frag.raw)
    if dependency not in chk.recorded:  # what the cached model depends on: each once
        chk.recorded.add(dependency)
        chk.includes.append(dependency)
    # include vars and the fragment's defaults are rendered in the including scope
    given = chk.vars_block(doc, path + ("vars",), raw.get("vars"), scope.copy(), sequential=False)
    defaults = chk.vars_block(frag, ("vars",), frag.data.get("vars"), scope.copy(), sequential=False)
    # A fragment's own vars are defaults, which a value the run is given from outside the file
    # replaces at run time (Step.defaults: one model serves every --matrix provider); an
    # include's vars are its arguments, and stay.
    merged = {**defaults, **given}
    inner = Scope(
        defined=set(scope.defined) | set(merged),
        tainted={n for n in scope.tainted if n not in merged}
        | {n for n, v in merged.items() if chk.taints(v, scope)},
        protocol=scope.protocol,
        via=scope.via + (loc,),
        bindings=scope.bindings + (merged,),
        defaults=scope.defaults + (frozenset(defaults) - frozenset(given),),
        chain=scope.chain + ((doc.real, here),),
        check_undefined=scope.check_undefined,
    )
    chk.secrets_block(frag, ("secrets",), frag.data.get("secrets"), inner, set(merged))
    return frag, inner


def _resolved(chk: Checker, doc: Doc, target: str):
    """The fragment's resolved path, worked out once per (directory, target): a fan-out
    includes the same fragments from the same places again and again."""
    key = (doc.base_dir, target)
    real = chk.resolved.get(key)
    if real is None:
        real = chk.resolved[key] = (doc.base_dir / target).resolve()
    return real


def within_budget(chk: Checker, doc: Doc, path: Path_, frag: Doc) -> bool:
    """Before a fragment's steps are expanded: would they take the file past MAX_STEPS? The
    count comes from the fragments' YAML alone (memoized per fragment), so a fan-out that
    doubles at each level is refused at its first include, not after 100,000 expansions.
    False after reporting it."""
    size = _planned(chk, frag, 0)
    if chk.expanded + size <= MAX_STEPS:
        return True
    chk.expanded = MAX_STEPS + 1  # reported: the file builds nothing more
    chk.add(
        doc,
        path + ("include",),
        f"this include expands to about {size:,} steps, more than the {MAX_STEPS:,} a scenario may "
        "(includes included more than once count each time): is an include repeated at every level?",
    )
    return False


def _planned(chk: Checker, frag: Doc, depth: int) -> int:
    """How many steps and includes `frag` expands to (an unreadable fragment, a cycle or a
    chain past MAX_INCLUDE_DEPTH counts as nothing more: the expansion reports those)."""
    real = frag.real
    if real in chk.planned:
        return chk.planned[real]
    chk.planned[real] = 0  # while counting: a cycle adds nothing
    n = 0
    items = frag.data.get("steps") if isinstance(frag.data, dict) else None
    for raw in items if isinstance(items, list) else ():
        n += 1
        target = raw.get("include") if isinstance(raw, dict) else None
        if isinstance(target, str) and depth < MAX_INCLUDE_DEPTH:
            inner = _peek(chk, _resolved(chk, frag, target))
            if inner is not None:
                n += _planned(chk, inner, depth + 1)
    chk.planned[real] = n
    return n


def _peek(chk: Checker, real) -> Doc | None:
    """A fragment's Doc for counting: the registered one, or read now and kept for its
    registration (_read_fragment); None when it cannot be read (its include reports why)."""
    frag = chk.docs.get(real) or chk.peeked.get(real)
    if frag is None:
        try:
            frag = chk.peeked[real] = read_doc(real, what="an included fragment")
        except ScenarioError:
            return None
    return frag


def _read_fragment(chk: Checker, doc: Doc, path: Path_, real, disp: str, chain_text: str) -> Doc | None:
    try:
        frag = chk.peeked.pop(real, None) or read_doc(real, what="an included fragment")
    except ScenarioError as e:
        if not real.exists():
            chk.add(doc, path + ("include",), f"{chain_text}: file not found")
            return None
        for p in e.problems[:1]:
            chk.add(doc, path + ("include",), f"{chain_text}: {p.split(': ', 1)[-1]}")
        return None
    frag.display = disp
    if not is_fragment_data(frag.data):
        chk.add(
            doc,
            path + ("include",),
            f"{chain_text}: not a fragment (a fragment has steps and optional vars, secrets, "
            "description; no name, connect or sessions)",
        )
        return None
    chk.register(frag, "fragment")
    return frag
