"""Unit tests of deploy/k8s/render.py, the pure-Python kustomize subset the manifests use
(tests/test_k8s.py compares its output with `kubectl kustomize` on every overlay)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.deploy_helpers import K8S, plain_env, render


def test_renderer_merge_rules(tmp_path):
    base = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "img:1", "args": ["x", "y"],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}}}
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
             "spec": {"template": {"spec": {"containers": [
                 {"name": "a", "args": ["z"], "env": [{"name": "B", "value": "3"},
                                                      {"name": "C", "value": "4"}],
                  "volumeMounts": [{"name": "w", "mountPath": "/v"}]}]}}}}
    merged = render.apply_patch([base], patch, tmp_path)[0]
    container = merged["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["z"]  # lists without a merge key are replaced
    assert plain_env(container) == {"A": "1", "B": "3", "C": "4"}
    assert container["volumeMounts"] == [{"name": "w", "mountPath": "/v"}]  # by mountPath
    assert container["image"] == "img:1"
    # CRDs: JSON merge patch, lists replaced whole
    crd = {"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x"},
           "spec": {"items": [{"name": "a", "v": 1}], "keep": 1}}
    crd_patch = {"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x"},
                 "spec": {"items": [{"name": "b"}], "keep": None}}
    assert render.apply_patch([crd], crd_patch, tmp_path)[0]["spec"] == {"items": [{"name": "b"}]}
    deleted = render.apply_patch([base, crd], {**patch, "$patch": "delete"}, tmp_path)
    assert [d["kind"] for d in deleted] == ["X"]
    with pytest.raises(render.RenderError, match="matches 0"):
        render.apply_patch([crd], patch, tmp_path)


def test_renderer_images_namespace_and_generators(tmp_path):
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "app"}],
                                       "initContainers": [{"name": "i", "image": "other:2"}]}}}}))
    (tmp_path / "f.json").write_text("{}")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["d.yaml"], "namespace": "ns",
        "images": [{"name": "app", "newName": "reg/app", "newTag": "7"},
                   {"name": "other", "digest": "sha256:abc"}],
        "configMapGenerator": [{"name": "cm", "files": ["f.json"], "options": {
            "disableNameSuffixHash": True, "labels": {"l": "1"}}}]}))
    docs = {d["kind"]: d for d in render.build(tmp_path)}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "reg/app:7"
    assert pod["initContainers"][0]["image"] == "other@sha256:abc"
    assert docs["ConfigMap"] == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "cm", "labels": {"l": "1"}, "namespace": "ns"}, "data": {"f.json": "{}"}}
    assert render.split_image("host:5000/app:1") == ("host:5000/app", "1")
    assert render.split_image("host:5000/app") == ("host:5000/app", None)
    (tmp_path / "kustomization.yaml").write_text("resources: [d.yaml]\nreplicas: []\n")
    with pytest.raises(render.RenderError, match="unsupported"):
        render.build(tmp_path)


def test_render_script_prints_yaml():
    out = subprocess.run([sys.executable, str(K8S / "render.py"), str(K8S / "overlays" / "1xh100")],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(out)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "Job"} <= kinds
    script = [sys.executable, str(K8S / "render.py")]
    helped = subprocess.run([*script, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "render.py" in helped.stdout and not helped.stderr
    missing = subprocess.run([*script, "no/such/dir"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "no kustomization.yaml" in missing.stderr
    assert subprocess.run(script, capture_output=True, timeout=60).returncode == 2


def test_renderer_json_patches(tmp_path):
    doc = {"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "x", "annotations": {}},
           "spec": {"items": [{"a": 1}, {"a": 2}], "drop": 1}}
    ops = [{"op": "replace", "path": "/spec/items/1/a", "value": 3},
           {"op": "add", "path": "/spec/items/-", "value": {"a": 4}},
           {"op": "add", "path": "/metadata/annotations/a.io~1b", "value": "c"},
           {"op": "remove", "path": "/spec/drop"}]
    out = render.apply_json_patch([doc], ops, {"kind": "X", "name": "x"}, tmp_path)[0]
    assert out["spec"] == {"items": [{"a": 1}, {"a": 3}, {"a": 4}]}
    assert out["metadata"]["annotations"] == {"a.io/b": "c"}
    with pytest.raises(render.RenderError, match="does not exist"):
        render.json6902(doc, [{"op": "replace", "path": "/spec/nope", "value": 1}], tmp_path)
    with pytest.raises(render.RenderError, match="unsupported"):
        render.json6902(doc, [{"op": "move", "path": "/spec", "from": "/x"}], tmp_path)
    with pytest.raises(render.RenderError, match="no single resource"):
        render.apply_json_patch([doc], ops, {"kind": "X", "name": "y"}, tmp_path)
