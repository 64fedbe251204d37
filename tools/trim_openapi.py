#!/usr/bin/env python3
"""Trim Stripe's OpenAPI description to what tools/gen_catalog.py and the tests read.

Keeps every schema (types, formats, enums, references, nesting) and the parameters of
every GET operation; drops the prose (descriptions, titles, examples) and the responses,
which are nine tenths of the file.  Usage:

    python3 tools/trim_openapi.py spec3.json test/fixtures/stripe/openapi-2020-03-02.json
"""
import json
import sys

PROSE = {"description", "summary", "title", "example", "examples", "operationId",
         "x-stripeResource", "x-resourceId", "x-stripeOperations", "responses"}


def strip(node, names_here=False):
    """names_here: node maps names to schemas (properties), where any key is data."""
    if isinstance(node, dict):
        return {k: strip(v, k == "properties" and not names_here)
                for k, v in node.items() if names_here or k not in PROSE}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(src, dst):
    spec = json.load(open(src, encoding="utf-8"))
    out = {"openapi": spec.get("openapi"), "info": {"version": spec["info"].get("version")},
           "paths": {}, "components": {"schemas": strip(spec["components"]["schemas"], True)}}
    for path, ops in spec["paths"].items():
        if "get" in ops:
            out["paths"][path] = {"get": {"parameters": strip(ops["get"].get("parameters", []))}}
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(out, f, separators=(",", ":"), sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
