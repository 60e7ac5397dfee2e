#!/usr/bin/env python3
"""Generates a BOSA `GET /connectors` answer for bench/run scenario (g): C connectors x A actions.

Shape per docs/bosa.md: a bare object keyed by connector, each keyed by action, with
method, path, docstring, parameters.request.schema and a pydantic-style request_body ($defs, anyOf
with null). Writes connectors.json (all connectors) and names.json (the names) into --out.
"""
import argparse
import json
import os
import sys


def action_schema(connector, action):
    return {
        "method": "POST",
        "path": f"/connectors/{connector}/{action}",
        "docstring": f"{action.replace('_', ' ').capitalize()} on {connector}.",
        "parameters": {"request": {"schema": {"type": "object", "properties": {
            "owner": {"type": "string"},
            "repo": {"type": "string"},
            "state": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "page": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "per_page": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}}}}},
        "request_body": {
            "title": "".join(p.capitalize() for p in action.split("_")) + "Request",
            "type": "object",
            "properties": {
                "owner": {"type": "string", "minLength": 1, "maxLength": 100},
                "repo": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                "state": {"anyOf": [{"enum": ["open", "closed", "all"], "type": "string"}, {"type": "null"}],
                          "default": None},
                "page": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
                "per_page": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 100}, {"type": "null"}],
                             "default": None},
                "filter": {"anyOf": [{"$ref": "#/$defs/Filter"}, {"type": "null"}], "default": None},
            },
            "required": ["owner", "repo"],
            "$defs": {"Filter": {"title": "Filter", "type": "object", "properties": {
                "label": {"type": "string"}, "since": {"type": "string", "format": "date-time"}}}},
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--connectors", type=int, default=100)
    parser.add_argument("--actions", type=int, default=100, help="actions per connector")
    args = parser.parse_args()
    if args.connectors <= 0 or args.actions <= 0:
        print("gen_connectors: counts must be positive", file=sys.stderr)
        return 2
    verbs = ["list", "get", "search", "create", "update"]
    doc = {}
    for c in range(args.connectors):
        name = f"bench{c:03d}"
        doc[name] = {f"{verbs[a % len(verbs)]}_items_{a:03d}": action_schema(name, f"{verbs[a % len(verbs)]}_items_{a:03d}")
                     for a in range(args.actions)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "connectors.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
    with open(os.path.join(args.out, "names.json"), "w", encoding="utf-8") as f:
        json.dump(sorted(doc), f)
    print(args.connectors * args.actions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
