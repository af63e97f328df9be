"""Kubernetes fields from the kubelet's log file names.

``/var/log/containers/<pod>_<namespace>_<container>-<64 hex container id>.log`` (symlinks the kubelet keeps)
and ``/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log``. Pod and namespace names
are DNS labels (no ``_``), so the underscores split them unambiguously.
"""

from __future__ import annotations

import functools
import re

from agent.events import SOURCE_LABEL_FIELDS

_CONTAINERS = re.compile(
    r"(?:^|/)(?P<pod>[a-z0-9][-a-z0-9.]*)_(?P<namespace>[a-z0-9][-a-z0-9]*)_"
    r"(?P<container>[a-z0-9][-a-z0-9]*)-[0-9a-f]{64}\.log\Z")
_PODS = re.compile(
    r"(?:^|/)(?P<namespace>[a-z0-9][-a-z0-9]*)_(?P<pod>[a-z0-9][-a-z0-9.]*)_(?P<uid>[-0-9a-f]+)/"
    r"(?P<container>[a-z0-9][-a-z0-9]*)/[0-9]+\.log(?:\.[^/]*)?\Z")

KUBERNETES_FIELDS = SOURCE_LABEL_FIELDS


@functools.lru_cache(maxsize=4096)
def kubernetes_fields(path: str) -> dict[str, str]:
    """``k8s_namespace``, ``k8s_pod``, ``k8s_container`` of a kubelet log path; empty for any other path.
    (Cached: a batch's path repeats for every batch of that file.)"""
    m = _CONTAINERS.search(path) or _PODS.search(path)
    if m is None:
        return {}
    return {"k8s_namespace": m["namespace"], "k8s_pod": m["pod"], "k8s_container": m["container"]}
