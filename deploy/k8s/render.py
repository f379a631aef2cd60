"""Render a kustomization of deploy/k8s in pure Python (PyYAML only), like ``kustomize build``.

    python3 deploy/k8s/render.py deploy/k8s/overlays/1xh100 > s1-serve.yaml

Why: neither kustomize nor Helm is packaged on PyPI or Debian, so CI (pytest on a fresh
machine) could not render the manifests it validates. The overlays stay ordinary kustomize
(``kubectl apply -k`` works and is what the README shows); this renders the subset of
kustomize they use, and tests/test_k8s.py checks it against ``kubectl kustomize`` wherever
kubectl is installed. Supported, and refused loudly otherwise:

- ``resources`` (files, and folders holding a kustomization), ``namespace`` (also on the
  ServiceAccount subjects of role bindings);
- ``patches`` with a ``path`` to a strategic-merge patch (target: the patch's kind and name),
  including ``$patch: delete``; or to a JSON 6902 patch (a list of add/replace/remove
  operations) with a ``target`` naming its kind and name. Built-in kinds merge lists by their Kubernetes merge key
  (containers by name, volumeMounts by mountPath...); other kinds (CRDs) follow JSON merge
  patch (lists are replaced), as kustomize does without their schema;
- ``images`` (newName, newTag, digest) on built-in workloads and on the kinds and paths that
  ``configurations`` files add;
- ``configMapGenerator`` from files, with ``options.labels`` and ``disableNameSuffixHash``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources", "patches", "images",
                  "configurations", "configMapGenerator"}
# Lists Kubernetes merges item by item in a strategic-merge patch, and the key it matches on.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "imagePullSecrets": "name",
              "ports": ("containerPort", "port")}
# Kinds whose schema kustomize knows (strategic merge, image fields); the rest are CRDs to it.
BUILTIN_GROUPS = ("v1", "apps/", "batch/", "policy/", "networking.k8s.io/", "autoscaling/",
                  "rbac.authorization.k8s.io/", "storage.k8s.io/")
WORKLOAD_POD_SPECS = {"Deployment": ("spec", "template", "spec"),
                      "StatefulSet": ("spec", "template", "spec"),
                      "DaemonSet": ("spec", "template", "spec"),
                      "ReplicaSet": ("spec", "template", "spec"),
                      "Job": ("spec", "template", "spec"),
                      "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
                      "Pod": ("spec",)}


class RenderError(Exception):
    """A kustomization uses something this renderer does not support, or is broken."""


def is_builtin(doc: dict) -> bool:
    api = doc.get("apiVersion", "")
    return api == "v1" or api.startswith(BUILTIN_GROUPS[1:])


def key_of(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


# ------------------------------------------------------------------------------ merging
def strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes strategic merge for the fields in MERGE_KEYS; maps merge, other lists replace."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_list(out[key], value, MERGE_KEYS[key])
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(base: list, patch: list, keys: str | tuple[str, ...]) -> list:
    keys = (keys,) if isinstance(keys, str) else keys
    field = next((k for k in keys if all(isinstance(i, dict) and k in i for i in base + patch)),
                 None)
    if field is None:
        raise RenderError(f"cannot merge lists without a common merge key {keys}: {patch}")
    out = [copy.deepcopy(i) for i in base]
    for item in patch:
        index = next((n for n, i in enumerate(out) if i[field] == item[field]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
        elif index is None:
            out.append(copy.deepcopy(item))
        else:
            out[index] = strategic_merge(out[index], item)
    return out


def json_merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge(out.get(key), value)
    return out


# ------------------------------------------------------------------------------ transformers
def apply_patch(docs: list[dict], patch: dict, where: Path) -> list[dict]:
    target = key_of(patch)
    found = [d for d in docs if key_of(d) == target]
    if len(found) != 1:
        raise RenderError(f"{where}: patch target {target} matches {len(found)} resources")
    if patch.get("$patch") == "delete":
        return [d for d in docs if key_of(d) != target]
    merge = strategic_merge if is_builtin(found[0]) else json_merge
    return [merge(d, patch) if key_of(d) == target else d for d in docs]


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer must start with /: {path}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(doc: dict, ops: list[dict], where: Path) -> dict:
    """RFC 6902 add, replace and remove (what kustomize's JSON patches here use)."""
    out = copy.deepcopy(doc)
    for op in ops:
        if op.get("op") not in ("add", "replace", "remove") or "path" not in op:
            raise RenderError(f"{where}: unsupported JSON patch operation {op}")
        *parents, last = _pointer(op["path"])
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.get(part)
            if node is None:
                raise RenderError(f"{where}: {op['path']}: {part} does not exist")
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif op["op"] == "replace":
                node[index] = copy.deepcopy(op["value"])
            else:
                node.pop(index)
        elif op["op"] == "add":
            node[last] = copy.deepcopy(op["value"])
        elif last not in node:
            raise RenderError(f"{where}: {op['path']} does not exist ({op['op']})")
        elif op["op"] == "replace":
            node[last] = copy.deepcopy(op["value"])
        else:
            del node[last]
    return out


def apply_json_patch(docs: list[dict], ops: list[dict], target: dict, where: Path) -> list[dict]:
    if set(target) - {"group", "version", "kind", "name"} or not {"kind", "name"} <= set(target):
        raise RenderError(f"{where}: a JSON patch target needs kind and name (and may have "
                          f"group, version): {target}")
    key = (target["kind"], target["name"])
    if sum(key_of(d) == key for d in docs) != 1:
        raise RenderError(f"{where}: patch target {key} matches no single resource")
    return [json6902(d, ops, where) if key_of(d) == key else d for d in docs]


def image_paths(doc: dict, extra: list[dict]) -> list[tuple[str, ...]]:
    """Paths of container lists whose ``image`` fields the images transformer edits."""
    paths = []
    if is_builtin(doc) and doc["kind"] in WORKLOAD_POD_SPECS:
        spec = WORKLOAD_POD_SPECS[doc["kind"]]
        paths += [(*spec, "containers"), (*spec, "initContainers")]
    for spec in extra:
        if spec.get("kind") == doc["kind"]:
            parts = tuple(spec["path"].split("/"))
            if parts[-1] != "image":
                raise RenderError(f"images fieldSpec must end in /image: {spec['path']}")
            paths.append(parts[:-1])
    return paths


def set_images(doc: dict, images: list[dict], extra: list[dict]) -> None:
    for path in image_paths(doc, extra):
        node: Any = doc
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        for container in node or []:
            name, tag = split_image(container.get("image", ""))
            for rule in images:
                if rule["name"] != name:
                    continue
                new = rule.get("newName", name)
                if "digest" in rule:
                    container["image"] = f"{new}@{rule['digest']}"
                else:
                    new_tag = rule.get("newTag", tag)
                    container["image"] = f"{new}:{new_tag}" if new_tag else new


def split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image.split("@", 1)[0], None
    head, sep, tail = image.rpartition(":")
    if sep and "/" not in tail:
        return head, tail
    return image, None


def generate_config_maps(spec: list[dict], root: Path) -> list[dict]:
    out = []
    for gen in spec:
        options = gen.get("options", {})
        if set(gen) - {"name", "files", "options"} or not options.get("disableNameSuffixHash"):
            raise RenderError(f"{root}: configMapGenerator supports name, files and "
                              "options.disableNameSuffixHash: true only")
        data = {}
        for entry in gen["files"]:
            key, _, rel = entry.rpartition("=") if "=" in entry else ("", "", entry)
            path = (root / rel).resolve()
            if root.resolve() not in path.parents:
                raise RenderError(f"{root}: {rel} is outside the kustomization's folder")
            data[key or path.name] = path.read_text()
        meta = {"name": gen["name"]}
        if options.get("labels"):
            meta["labels"] = dict(options["labels"])
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return out


# ------------------------------------------------------------------------------ build
def load_kustomization(root: Path) -> dict:
    for name in KUSTOMIZATION_FILES:
        if (root / name).is_file():
            spec = yaml.safe_load((root / name).read_text()) or {}
            unknown = set(spec) - SUPPORTED_KEYS
            if unknown:
                raise RenderError(f"{root}: unsupported kustomization fields {sorted(unknown)}")
            return spec
    raise RenderError(f"{root}: no kustomization.yaml")


def build(root: str | Path) -> list[dict]:
    """The resources ``kustomize build root`` would output (order aside)."""
    root = Path(root)
    spec = load_kustomization(root)
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        path = root / entry
        if path.is_dir():
            docs += build(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    docs += generate_config_maps(spec.get("configMapGenerator", []), root)
    seen = set()
    for doc in docs:
        if key_of(doc) in seen:
            raise RenderError(f"{root}: {key_of(doc)} defined twice")
        seen.add(key_of(doc))
    for entry in spec.get("patches", []):
        if set(entry) not in ({"path"}, {"path", "target"}):
            raise RenderError(f"{root}: only patches with a path (and a target) are "
                              f"supported: {entry}")
        patch = yaml.safe_load((root / entry["path"]).read_text())
        if isinstance(patch, list):
            if "target" not in entry:
                raise RenderError(f"{root}: JSON patch {entry['path']} needs a target")
            docs = apply_json_patch(docs, patch, entry["target"], root / entry["path"])
        elif "target" in entry:
            raise RenderError(f"{root}: {entry['path']}: targets only for JSON patches here")
        else:
            docs = apply_patch(docs, patch, root / entry["path"])
    if "namespace" in spec:
        for doc in docs:
            doc["metadata"]["namespace"] = spec["namespace"]
            # As kustomize does: a binding's ServiceAccount subjects follow into the namespace.
            if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
                for subject in doc.get("subjects", []):
                    if subject.get("kind") == "ServiceAccount":
                        subject.setdefault("namespace", spec["namespace"])
    extra: list[dict] = []
    for conf in spec.get("configurations", []):
        conf_spec = yaml.safe_load((root / conf).read_text()) or {}
        if set(conf_spec) - {"images"}:
            raise RenderError(f"{root / conf}: only images fieldSpecs are supported")
        extra += conf_spec.get("images", [])
    if spec.get("images"):
        for doc in docs:
            set_images(doc, spec["images"], extra)
    return docs


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    usage = __doc__.split("\n\n")[1]
    if args in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(args) != 1 or args[0].startswith("-"):
        print(f"usage:{usage}", file=sys.stderr)
        return 2
    try:
        docs = build(args[0])
    except (RenderError, OSError, yaml.YAMLError) as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
