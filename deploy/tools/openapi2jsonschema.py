#!/usr/bin/env python3
"""Convert Kubernetes' OpenAPI v2 swagger.json into strict, standalone JSON
schemas laid out for kubeconform, offline.

    openapi2jsonschema.py SWAGGER_JSON OUT_DIR

writes OUT_DIR/<kind>[-<group>]-<version>.json for every kind in the spec
(e.g. deployment-apps-v1.json, service-v1.json), the names kubeconform looks
up with -schema-location 'OUT_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'.

What yannh/kubernetes-json-schema's "-standalone-strict" schemas do, from
the same input (after instrumenta/openapi2jsonschema):
- strict: every object schema with "properties" and no "additionalProperties"
  gets "additionalProperties": false, so misspelt or misplaced fields fail;
- standalone: no remote $ref; each file carries the definitions it reaches
  under "definitions" (local refs keep recursive types such as
  JSONSchemaProps finite);
- IntOrString accepts a string or an integer, Quantity a string or a number;
- apiVersion and kind are pinned to the file's group/version and kind.
"""
import json
import os
import sys

INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
REF_PREFIX = "#/definitions/"


def fix(node):
    """Returns node made strict, with int-or-string formats replaced."""
    if isinstance(node, list):
        return [fix(x) for x in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    out = {k: fix(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def refs(node, found):
    if isinstance(node, list):
        for x in node:
            refs(x, found)
    elif isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith(REF_PREFIX):
            found.add(r[len(REF_PREFIX):])
        for v in node.values():
            refs(v, found)


def closure(defs, name):
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        found = set()
        refs(defs[n], found)
        todo.extend(found - seen)
    return sorted(seen)


def main(swagger, out):
    with open(swagger) as f:
        spec = json.load(f)
    defs = {k: fix(v) for k, v in spec["definitions"].items()}
    defs[QUANTITY] = {"description": "Quantity", "oneOf": [{"type": "string"}, {"type": "number"}]}
    os.makedirs(out, exist_ok=True)
    written = 0
    for name, d in spec["definitions"].items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            api_version = f"{group}/{version}" if group else version
            schema = json.loads(json.dumps(defs[name]))
            props = schema.get("properties", {})
            if "apiVersion" in props:
                props["apiVersion"] = dict(props["apiVersion"], enum=[api_version])
            if "kind" in props:
                props["kind"] = dict(props["kind"], enum=[kind])
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            schema["definitions"] = {n: defs[n] for n in closure(defs, name)}
            suffix = "-" + group.split(".")[0] if group else ""
            fname = f"{kind}{suffix}-{version}.json".lower()
            with open(os.path.join(out, fname), "w") as f:
                json.dump(schema, f)
            written += 1
    print(f"{written} schemas written to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} SWAGGER_JSON OUT_DIR")
    main(sys.argv[1], sys.argv[2])
