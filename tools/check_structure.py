#!/usr/bin/env python3
"""The shape the code keeps (README "Development"): no hand-written source file in
src/ over 1,000 lines, no function over 120, no header that includes postgres.h, and
no include cycle between modules (a module is a .c file and the .h of the same name).
Prints what breaks a rule and exits 1, else prints a one-line summary.

    python3 tools/check_structure.py [src]
"""
import os
import re
import sys

MAX_FILE, MAX_FUNC = 1000, 120
GENERATED = {"catalog_data.c"}


def functions(lines):
    """(name, first line, length) of each function definition at file level."""
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        # a definition: a line starting with a name and "(" at column 0, the body
        # "{" at column 0 on a later line, before any ";"
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\(", line)
        if m and not line.rstrip().endswith(";"):
            j = i
            while j < len(lines) and not lines[j].startswith("{") and ";" not in lines[j]:
                j += 1
            if j < len(lines) and lines[j].startswith("{"):
                k = j
                while k < len(lines) and not lines[k].startswith("}"):
                    k += 1
                out.append((m.group(1), i + 1, k - i + 2))  # with the return-type line
                i = k
        i += 1
    return out


def main(src):
    problems = []
    files = sorted(f for f in os.listdir(src) if f.endswith((".c", ".h")))
    nfunc = 0
    graph = {}
    for f in files:
        lines = open(os.path.join(src, f), encoding="utf-8").read().split("\n")
        if f not in GENERATED and len(lines) > MAX_FILE:
            problems.append(f"{f}: {len(lines)} lines (at most {MAX_FILE})")
        if f.endswith(".c") and f not in GENERATED:
            for name, first, n in functions(lines):
                nfunc += 1
                if n > MAX_FUNC:
                    problems.append(f"{f}:{first}: {name}() has {n} lines (at most {MAX_FUNC})")
        if f.endswith(".h") and any(re.match(r'#include\s+"postgres\.h"', l) for l in lines):
            problems.append(f"{f}: a header must not include postgres.h")
        mod = f.rsplit(".", 1)[0]
        for l in lines:
            m = re.match(r'#include\s+"([A-Za-z0-9_]+)\.h"', l)
            if m and m.group(1) != mod and os.path.exists(os.path.join(src, m.group(1) + ".h")):
                graph.setdefault(mod, set()).add(m.group(1))
    # a cycle: a module that reaches itself
    state = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                problems.append("include cycle: " + " -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    if problems:
        print("\n".join(problems))
        return 1
    print(f"structure: {len(files)} files, {nfunc} functions, no file over {MAX_FILE} lines, "
          f"no function over {MAX_FUNC}, no include cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")))
