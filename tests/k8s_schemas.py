"""JSON schemas for the custom resources of deploy/k8s, which kubernetes-validate cannot know.

kubernetes-validate carries the built-in API's schemas only. For the CRDs the manifests use
(KEDA's ScaledObject, the Prometheus Operator's ServiceMonitor and PrometheusRule,
LeaderWorkerSet) these are
written after their API references, restricted to the fields in use plus their documented
siblings, with ``additionalProperties: false`` so that a misspelt or misplaced field fails.
The pod templates inside a LeaderWorkerSet are not checked here: tests/test_k8s.py validates
them against the real PodTemplateSpec schema.
"""

from __future__ import annotations

from typing import Any


def obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


STR, INT = {"type": "string"}, {"type": "integer"}
ANY_OBJ = {"type": "object"}
METADATA = {"type": "object", "required": ["name"]}
LABEL_SELECTOR = obj({"matchLabels": {"type": "object", "additionalProperties": STR},
                      "matchExpressions": {"type": "array"}})


def resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return obj({"apiVersion": {"const": api_version}, "kind": {"const": kind},
                "metadata": METADATA, "spec": spec}, ("apiVersion", "kind", "metadata", "spec"))


# https://keda.sh/docs/2.17/reference/scaledobject-spec/
SCALED_OBJECT = resource("keda.sh/v1alpha1", "ScaledObject", obj({
    "scaleTargetRef": obj({"apiVersion": STR, "kind": STR, "name": STR,
                           "envSourceContainerName": STR}, ("name",)),
    "pollingInterval": INT, "cooldownPeriod": INT, "initialCooldownPeriod": INT,
    "idleReplicaCount": INT, "minReplicaCount": INT, "maxReplicaCount": INT,
    "fallback": obj({"failureThreshold": INT, "replicas": INT,
                     "behavior": {"enum": ["static", "currentReplicas", "currentReplicasIfHigher",
                                           "currentReplicasIfLower"]}},
                    ("failureThreshold", "replicas")),
    "advanced": obj({"restoreToOriginalReplicaCount": {"type": "boolean"},
                     "horizontalPodAutoscalerConfig": obj({"name": STR, "behavior": ANY_OBJ}),
                     "scalingModifiers": ANY_OBJ}),
    "triggers": {"type": "array", "minItems": 1, "items": obj({
        "type": STR, "name": STR, "useCachedMetrics": {"type": "boolean"},
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "authenticationRef": ANY_OBJ,
        "metadata": {"type": "object", "additionalProperties": STR}}, ("type", "metadata"))},
}, ("scaleTargetRef", "triggers")))

# https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.ServiceMonitor
SERVICE_MONITOR = resource("monitoring.coreos.com/v1", "ServiceMonitor", obj({
    "selector": LABEL_SELECTOR, "namespaceSelector": ANY_OBJ, "jobLabel": STR,
    "endpoints": {"type": "array", "minItems": 1, "items": obj({
        "port": STR, "targetPort": {}, "path": STR, "scheme": STR, "interval": STR,
        "scrapeTimeout": STR, "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array"},
        "metricRelabelings": {"type": "array"}, "authorization": ANY_OBJ})},
}, ("selector", "endpoints")))

# https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.PrometheusRule
PROMETHEUS_RULE = resource("monitoring.coreos.com/v1", "PrometheusRule", obj({
    "groups": {"type": "array", "minItems": 1, "items": obj({
        "name": STR, "interval": STR, "limit": INT, "partial_response_strategy": STR,
        "rules": {"type": "array", "minItems": 1, "items": obj({
            "alert": STR, "record": STR, "expr": STR, "for": STR, "keep_firing_for": STR,
            "labels": {"type": "object", "additionalProperties": STR},
            "annotations": {"type": "object", "additionalProperties": STR}}, ("expr",))},
    }, ("name", "rules"))},
}, ("groups",)))

# https://lws.sigs.k8s.io/docs/reference/leaderworkerset.v1/
LEADER_WORKER_SET = resource("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", obj({
    "replicas": INT,
    "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
    "networkConfig": ANY_OBJ,
    "rolloutStrategy": obj({"type": {"const": "RollingUpdate"},
                            "rollingUpdateConfiguration": obj({"maxUnavailable": {},
                                                               "maxSurge": {},
                                                               "partition": INT})}),
    "leaderWorkerTemplate": obj({
        "size": {"type": "integer", "minimum": 1},
        "restartPolicy": {"enum": ["RecreateGroupOnPodRestart", "RecreateGroupAfterStart",
                                   "None"]},
        "leaderTemplate": ANY_OBJ, "workerTemplate": ANY_OBJ,
        "subGroupPolicy": ANY_OBJ, "volumeClaimTemplates": {"type": "array"},
    }, ("workerTemplate",)),
}, ("leaderWorkerTemplate",)))

CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
               ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
               ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
               ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): LEADER_WORKER_SET}
