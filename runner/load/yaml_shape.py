"""The shape of a YAML document, checked on the parser's events before any tree is built:
at most MAX_NODES values and MAX_DEPTH levels of nesting (runner.load.yaml_doc uses it)."""

from __future__ import annotations

import yaml

MAX_NODES = 100_000
MAX_DEPTH = 200


class TooBig(Exception):
    """mark: where a limit was passed (a YAML mark, for its line and column)."""

    def __init__(self, mark, recursive: bool = False, deep: bool = False):
        self.mark = mark
        self.recursive = recursive
        self.deep = deep


_NODE_EVENTS = (
    yaml.ScalarEvent,
    yaml.SequenceStartEvent,
    yaml.MappingStartEvent,
    yaml.AliasEvent,
)
_OPEN_EVENTS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE_EVENTS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def check_shape(loader_class, text: str) -> None:
    """Before any tree is built: TooBig at the first node past MAX_NODES or MAX_DEPTH levels
    of nesting. The parser's events come from a loop, not recursion, and cost nothing kept, so
    a file nested 1,000 deep or holding millions of values stops here, early and small."""
    loader = loader_class(text)
    depth = nodes = 0
    try:
        while (ev := loader.get_event()) is not None:
            if isinstance(ev, _NODE_EVENTS):
                nodes += 1
                if nodes > MAX_NODES:
                    raise TooBig(ev.start_mark)
                if isinstance(ev, _OPEN_EVENTS):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise TooBig(ev.start_mark, deep=True)
            elif isinstance(ev, _CLOSE_EVENTS):
                depth -= 1
    except yaml.MarkedYAMLError as e:
        if "nesting depth" in (e.problem or ""):  # libyaml's own limit (1,000 levels)
            raise TooBig(e.problem_mark, deep=True) from None
        return  # the composer reports it, in its words
    except yaml.YAMLError:
        return
    except RecursionError:  # the pure-Python parser recurses into flow collections
        raise TooBig(loader.get_mark(), deep=True) from None
    finally:
        loader.dispose()
