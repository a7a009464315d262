#!/usr/bin/env python3
"""Import loops between the files of one crate.

Run from the repository root (python3, no dependencies):

    python3 scripts/check-file-loops.py          # every crate under crates/ and src/
    python3 scripts/check-file-loops.py crates/core crates/prove   # some of them

For every crate (each `crates/*/src` and the root package's `src`) it builds
the graph of references between the crate's files and prints every loop: a
strongly connected component of more than one file. Exit status 1 when there
is one, else 0.

A module is a file: `lib.rs` (or `main.rs`) is the crate root, `x.rs` and
`x/mod.rs` are module `x`, `x/y.rs` is `x::y`. A file refers to another when
its code (comments and string literals removed) names a path into it:
`use crate::...`, `crate::x::...`, `super::...`, `self::...`, or a child
module declared in the file (`mod x;` then `x::...`, `pub use x::Y`). A path
belongs to the deepest file it reaches (`crate::authz::query::Query` is
`authz/query.rs`; `crate::authz::Query`, a re-export, is `authz/mod.rs`).
`mod x;` itself is not a reference, and neither are doc links. Paths inside
inline modules (`mod tests { use super::*; }`) resolve from the inline
module. `main.rs` beside a `lib.rs` is a crate of its own and is skipped.

scripts/check-layers.sh runs it (and so does .ci/run).
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(src):
    """The source with comments, string and char literals blanked out
    (newlines kept), lifetimes left as they are."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("".join(ch if ch == "\n" else " " for ch in src[i:j]))
            i = j
            continue
        m = re.match(r'b?r(#*)"', src[i:i + 300])
        if m and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + "".join("\n" for ch in src[i:j] if ch == "\n"))
            i = j
            continue
        if c == '"' or (c == "b" and src.startswith('b"', i) and
                        (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_"))):
            j = i + (2 if c == "b" else 1)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append('""' + "".join("\n" for ch in src[i:j] if ch == "\n"))
            i = j
            continue
        if c == "'":
            if src.startswith("'\\", i):
                j = src.find("'", i + 2)
                j = n if j < 0 else j + 1
                out.append("' '")
                i = j
                continue
            if i + 2 < n and src[i + 2] == "'":
                out.append("' '")
                i += 3
                continue
        out.append(c)
        i += 1
    return "".join(out)


def split_top(s):
    """`s` split at the commas outside braces."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def expand(tree, prefix=()):
    """The paths (segment tuples) of a use tree such as `a::{b, c::{self, D}}`."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    if tree.startswith("::"):
        tree = tree[2:]
    brace = tree.find("{")
    if brace < 0:
        segs = [s for s in tree.split("::") if s]
        if segs and segs[-1] in ("self", "*"):
            segs = segs[:-1]
        return [prefix + tuple(segs)]
    head = tree[:brace]
    inner = tree[brace + 1:tree.rfind("}")]
    base = prefix + tuple(s for s in head.split("::") if s)
    paths = []
    for part in split_top(inner):
        paths.extend(expand(part, base))
    return paths


USE_RE = re.compile(r"\buse\s+([^;]*);")


def module_map(src_dir):
    """{module path tuple: file} for one crate's src directory."""
    files = {}
    has_lib = os.path.exists(os.path.join(src_dir, "lib.rs"))
    for root, dirs, names in os.walk(src_dir):
        dirs.sort()
        for name in sorted(names):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src_dir)[:-3].split(os.sep)
            if rel == ["lib"] or (rel == ["main"] and not has_lib):
                files[()] = path
            elif rel == ["main"] or rel[0] == "bin":
                continue
            elif rel[-1] == "mod":
                files[tuple(rel[:-1])] = path
            else:
                files[tuple(rel)] = path
    return files


def references(mod_path, text, files):
    """The module paths of `files` that `text` (the file of `mod_path`) names."""
    found = set()
    # Inline modules: (name, brace depth at which it closes).
    scopes = []
    depth = 0
    children = {}  # module path -> set of child module names declared
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*[;{]", text):
        children.setdefault(mod_path, set()).add(m.group(1))

    def current():
        return mod_path + tuple(s for s, _ in scopes)

    def resolve(segs, here):
        if not segs:
            return None
        if segs[0] == "crate":
            base, rest = (), segs[1:]
        elif segs[0] in ("super", "self"):
            base, rest = here, list(segs)
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    base = base[:-1]
                rest = rest[1:]
        elif segs[0] in local_children(here):
            base, rest = here, segs
        else:
            return None
        full = tuple(base) + tuple(rest)
        for k in range(len(full), -1, -1):
            if full[:k] in files:
                return full[:k]
        return None

    inline_children = {}

    def local_children(here):
        return inline_children.get(here, set()) | (
            file_children if here == mod_path else set())

    file_children = set()
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*;", text):
        file_children.add(m.group(1))

    token = re.compile(
        r"\bmod\s+(" + IDENT + r")\s*\{|\{|\}|\buse\s+[^;]*;|"
        r"(?<![A-Za-z0-9_:])(?:" + IDENT + r")(?:\s*::\s*(?:" + IDENT + r"|\*))+")
    for m in token.finditer(text):
        tok = m.group(0)
        if m.group(1):
            here = current()
            inline_children.setdefault(here, set()).add(m.group(1))
            depth += 1
            scopes.append((m.group(1), depth))
        elif tok == "{":
            depth += 1
        elif tok == "}":
            if scopes and scopes[-1][1] == depth:
                scopes.pop()
            depth -= 1
        elif tok.startswith("use") and re.match(r"use\s", tok):
            body = USE_RE.match(tok).group(1)
            for segs in expand(body):
                target = resolve(list(segs), current())
                if target is not None:
                    found.add(target)
        else:
            segs = [s.strip() for s in tok.split("::")]
            target = resolve(segs, current())
            if target is not None:
                found.add(target)
    found.discard(mod_path)
    return found


def sccs(graph):
    """Tarjan's strongly connected components of `graph` {node: set(nodes)}."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src_dir):
    files = module_map(src_dir)
    graph = {}
    for mod_path, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = strip(f.read())
        graph[mod_path] = references(mod_path, text, files)
    loops = []
    for comp in sccs(graph):
        if len(comp) < 2:
            continue
        names = [os.path.relpath(files[m]) for m in comp]
        edges = []
        for m in comp:
            for t in sorted(graph[m]):
                if t in comp:
                    edges.append(f"{os.path.relpath(files[m])} -> {os.path.relpath(files[t])}")
        loops.append((names, edges))
    return loops


def main(argv):
    roots = argv[1:]
    if not roots:
        roots = sorted(os.path.join("crates", d) for d in os.listdir("crates")
                       if os.path.isdir(os.path.join("crates", d, "src")))
        roots.append(".")
    total = 0
    for root in roots:
        src_dir = os.path.join(root, "src")
        if not os.path.isdir(src_dir):
            continue
        for names, edges in check(src_dir):
            total += 1
            print(f"loop in {src_dir}: {len(names)} files")
            for name in names:
                print(f"  {name}")
            print("  because:")
            for e in edges:
                print(f"    {e}")
    if total:
        print(f"{total} import loop(s) between files")
        return 1
    print("no import loop between files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
