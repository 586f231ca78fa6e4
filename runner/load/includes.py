"""`include:` steps: finding the fragment, refusing cycles, and the scope its steps see.

The fragment's own steps are checked by runner.load.steps (which calls open_include); its
vars (the include's `vars:` over the fragment's defaults) are rendered in the including
scope and bound for its steps only, while its captures survive it.
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

__all__ = ["open_include"]


def open_include(
    chk: Checker, doc: Doc, path: Path_, raw: dict, scope: Scope, loc: Location
) -> tuple[Doc, Scope] | None:
    """The fragment an include step names (read, validated and registered once) and the scope
    for its steps; None after reporting why it cannot be included."""
    target = raw["include"]
    here = f"{doc.display}:{loc.line}"
    disp = os.path.normpath(os.path.join(os.path.dirname(doc.display), target))
    real = (doc.base_dir / target).resolve()
    chain_text = " -> ".join([c[1] for c in scope.chain] + [here, disp])
    if (
        real == doc.real
        or any(real == c[0] for c in scope.chain)
        or (not scope.chain and real == chk.order[0].real)
    ):
        chk.add(doc, path + ("include",), f"{chain_text}: include cycle")
        return None
    frag = chk.docs.get(real)
    if frag is None:
        frag = _read_fragment(chk, doc, path, real, disp, chain_text)
        if frag is None:
            return None
    elif chk.kinds.get(real) != "fragment":
        chk.add(doc, path + ("include",), f"{chain_text}: not a fragment")
        return None
    chk.includes.append((str(doc.base_dir / target), str(real), frag.raw))
    # include vars and the fragment's defaults are rendered in the including scope
    given = chk.vars_block(doc, path + ("vars",), raw.get("vars"), scope.copy(), sequential=False)
    defaults = chk.vars_block(frag, ("vars",), frag.data.get("vars"), scope.copy(), sequential=False)
    merged = {**defaults, **given}
    inner = Scope(
        defined=set(scope.defined) | set(merged),
        tainted={n for n in scope.tainted if n not in merged}
        | {n for n, v in merged.items() if chk.taints(v, scope)},
        protocol=scope.protocol,
        via=scope.via + (loc,),
        bindings=scope.bindings + (merged,),
        chain=scope.chain + ((doc.real, here),),
        check_undefined=scope.check_undefined,
    )
    chk.secrets_block(frag, ("secrets",), frag.data.get("secrets"), inner, set(merged))
    return frag, inner


def _read_fragment(chk: Checker, doc: Doc, path: Path_, real, disp: str, chain_text: str) -> Doc | None:
    try:
        frag = read_doc(real, what="an included fragment")
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
