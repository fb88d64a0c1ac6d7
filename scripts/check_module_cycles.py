#!/usr/bin/env python3
"""Checks that the modules of a crate import each other without cycles (DESIGN §8).

Every `crate::a::b` path and every `super::` path in `SRC/**/*.rs` is an edge from the file's
module to the module it names. Edges between a folder module and its own children (the folder's
`mod.rs` declaring and re-exporting them) are parent/child structure, not imports, and are left
out; so are a module's references to itself. Prints the graph's cycles, if any, and exits 1.

    python3 scripts/check_module_cycles.py infer/src           # modules
    python3 scripts/check_module_cycles.py infer/src --depth 1 # folders (top-level modules)
"""

import re
import sys
from pathlib import Path


def module_of(root: Path, f: Path) -> tuple:
    parts = list(f.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def known_modules(root: Path) -> set:
    mods = set()
    for f in root.rglob("*.rs"):
        m = module_of(root, f)
        for i in range(len(m) + 1):
            mods.add(m[:i])
    return mods


def resolve(path: list, mods: set) -> tuple:
    """The longest prefix of `path` that is a module."""
    best = ()
    for i in range(1, len(path) + 1):
        if tuple(path[:i]) in mods:
            best = tuple(path[:i])
    return best


def edges(root: Path) -> dict:
    mods = known_modules(root)
    graph = {m: set() for m in mods}
    for f in root.rglob("*.rs"):
        me = module_of(root, f)
        text = re.sub(r"//[^\n]*", "", f.read_text())  # comments (and doc links) are not imports
        # Test modules are leaves of their file; their imports are the file's.
        for m in re.finditer(r"\bcrate((?:::\w+)+)", text):
            target = resolve(m.group(1).split("::")[1:], mods)
            graph[me].add(target)
        for m in re.finditer(r"\b((?:super::)+)(\w+)", text):
            ups = m.group(1).count("super::")
            base = me[: len(me) - ups] if f.name != "mod.rs" else me[: len(me) - ups]
            target = resolve(list(base) + [m.group(2)], mods) or base
            graph[me].add(target)
    # Drop self edges and parent/child (containment) edges.
    for a in graph:
        graph[a] = {
            b for b in graph[a] if b != a and b[: len(a)] != a and a[: len(b)] != b
        }
    return graph


def cycles(graph: dict) -> list:
    found, seen = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cyc = path
                    key = frozenset(cyc)
                    if key not in seen:
                        seen.add(key)
                        found.append(cyc + [start])
                elif nxt not in path and len(path) < 8:
                    stack.append((nxt, path + [nxt]))
    return found


def collapse(graph: dict, depth: int) -> dict:
    out = {}
    for a, bs in graph.items():
        ca = a[:depth]
        out.setdefault(ca, set())
        for b in bs:
            cb = b[:depth]
            if cb != ca and cb[: len(ca)] != ca and ca[: len(cb)] != cb:
                out[ca].add(cb)
    return out


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = Path(args[0] if args else "infer/src")
    graph = edges(root)
    if "--depth" in sys.argv:
        graph = collapse(graph, int(sys.argv[sys.argv.index("--depth") + 1]))
    cyc = cycles(graph)
    name = lambda m: "::".join(m) or "crate"
    n_edges = sum(len(v) for v in graph.values())
    if cyc:
        for c in cyc:
            print("cycle: " + " → ".join(name(m) for m in c))
        return 1
    print(f"{root}: {len(graph)} modules, {n_edges} import edges, no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
