"""A pod's volumes as host directories, and each container's bind mounts.

Secret, ConfigMap, downward-API and projected volumes are written as files under the pod's work
directory (mode from ``defaultMode``/``mode``); emptyDir is a fresh directory anyone may write;
a PVC resolves to the directory of its bound PersistentVolume, given the pod's ``fsGroup`` as the
kubelet gives it to a block volume's file system (``volume_ownership``); hostPath is used as is.
The service account token arrives like any other Secret volume (the apiserver's ServiceAccount
admission adds it), or as a projected ``serviceAccountToken`` source on clusters that use bound
tokens.

Anything not ready yet (an unbound claim, a missing Secret) raises ``ConfigError`` and the pod
waits, as it would on a node.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from testground.podrunner.env import ConfigError, Fetch, expand, field_value

__all__ = [
    "ClaimResolver",
    "Mount",
    "TokenRequest",
    "container_mounts",
    "prepare_volumes",
    "volume_ownership",
]

Json = dict[str, Any]
ClaimResolver = Callable[[str, str], Path]
"""``resolve(namespace, claim_name)``: the claim's directory, or ConfigError when not bound."""
TokenRequest = Callable[[str, str, str | None, int], str]
"""``request(namespace, service_account, audience, expiration_seconds)``: a bound token."""


@dataclass(frozen=True)
class Mount:
    """One bind mount of a container: host ``source`` at ``target``."""

    source: Path
    target: str
    read_only: bool


def _safe_join(base: Path, rel: str) -> Path:
    parts = PurePosixPath(rel).parts
    if not rel or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise ConfigError(f"volume path {rel!r} must be relative and must not contain '..'")
    return base.joinpath(*parts)


def _write(base: Path, rel: str, data: bytes, mode: int) -> None:
    path = _safe_join(base, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode & 0o777)


def _key_values(kind: str, obj: Json) -> dict[str, bytes]:
    if kind == "secrets":
        return {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
    values = {k: str(v).encode() for k, v in obj.get("data", {}).items()}
    values.update({k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()})
    return values


def _project_keys(
    base: Path, fetch: Fetch, namespace: str, kind: str, source: Json, default_mode: int
) -> None:
    name = source.get("secretName") or source.get("name", "")
    obj = fetch(kind, namespace, name)
    singular = "secret" if kind == "secrets" else "configmap"
    if obj is None:
        if source.get("optional"):
            return
        raise ConfigError(f'{singular} "{name}" not found (volume)')
    values = _key_values(kind, obj)
    items = source.get("items")
    if not items:
        for key, data in values.items():
            _write(base, key, data, default_mode)
        return
    for item in items:
        if item["key"] not in values:
            if source.get("optional"):
                continue
            raise ConfigError(f'couldn\'t find key {item["key"]} in {singular} "{name}" (volume)')
        _write(base, item["path"], values[item["key"]], item.get("mode", default_mode))


def _downward(base: Path, pod: Json, items: list[Json], default_mode: int) -> None:
    for item in items:
        if "fieldRef" not in item:
            raise ConfigError("downwardAPI resourceFieldRef volumes are not supported")
        value = field_value(pod, item["fieldRef"]["fieldPath"])
        _write(base, item["path"], value.encode(), item.get("mode", default_mode))


def _volume_dir(
    pod: Json,
    volume: Json,
    base: Path,
    fetch: Fetch,
    claims: ClaimResolver,
    tokens: TokenRequest,
) -> Path:
    namespace = pod["metadata"]["namespace"]
    name = volume["name"]
    if "emptyDir" in volume:
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o777)  # as the kubelet makes it: writable by whichever user a container is
        return base
    if "persistentVolumeClaim" in volume:
        path = claims(namespace, volume["persistentVolumeClaim"]["claimName"])
        context = pod["spec"].get("securityContext") or {}
        if context.get("fsGroup") is not None:
            policy = context.get("fsGroupChangePolicy", "Always")
            volume_ownership(path, int(context["fsGroup"]), policy)
        return path
    if "hostPath" in volume:
        host = Path(volume["hostPath"]["path"])
        kind = volume["hostPath"].get("type", "")
        if kind == "DirectoryOrCreate":
            host.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            host.parent.mkdir(parents=True, exist_ok=True)
            host.touch(exist_ok=True)
        elif kind in ("Directory", "File") and not host.exists():
            raise ConfigError(f"hostPath {host} of volume {name} does not exist")
        return host
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    if "secret" in volume or "configMap" in volume:
        kind = "secrets" if "secret" in volume else "configmaps"
        spec = volume.get("secret") or volume["configMap"]
        _project_keys(base, fetch, namespace, kind, spec, spec.get("defaultMode", 0o644))
        return base
    if "downwardAPI" in volume:
        spec = volume["downwardAPI"]
        _downward(base, pod, spec.get("items", []), spec.get("defaultMode", 0o644))
        return base
    if "projected" in volume:
        spec = volume["projected"]
        mode = spec.get("defaultMode", 0o644)
        for src in spec.get("sources", []):
            if "secret" in src:
                _project_keys(base, fetch, namespace, "secrets", src["secret"], mode)
            elif "configMap" in src:
                _project_keys(base, fetch, namespace, "configmaps", src["configMap"], mode)
            elif "downwardAPI" in src:
                _downward(base, pod, src["downwardAPI"].get("items", []), mode)
            elif "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                sa = pod["spec"].get("serviceAccountName") or "default"
                token = tokens(
                    namespace, sa, sat.get("audience"), int(sat.get("expirationSeconds", 3600))
                )
                _write(base, sat["path"], token.encode(), mode)
        return base
    kinds = sorted(set(volume) - {"name"})
    raise ConfigError(f"volume {name}: type {kinds} is not supported by the pod runner")


def volume_ownership(root: Path, group: int, policy: str = "Always") -> None:
    """What the kubelet does to a volume for a pod's ``fsGroup`` (its SetVolumeOwnership):
    every file and directory gets the group and read and write for its owner and group,
    directories also search and set-group-ID (new files inherit the group); symlinks are
    left alone.
    ``OnRootMismatch`` skips the walk when the root already has the group and those bits.
    The test ground's claims stand in for block volumes (a new file system whose root
    belongs to root), where the kubelet does this; local-path volumes get no such change."""
    file_bits = 0o660
    dir_bits = stat.S_ISGID | 0o770
    info = root.stat()
    if policy == "OnRootMismatch" and info.st_gid == group and info.st_mode & dir_bits == dir_bits:
        return
    for top, _dirs, files in os.walk(root):  # each directory is a top once
        for path in [top, *(os.path.join(top, f) for f in files)]:
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            os.lchown(path, -1, group)
            bits = dir_bits if stat.S_ISDIR(mode) else file_bits
            os.chmod(path, stat.S_IMODE(mode) | bits)


def prepare_volumes(
    pod: Json, work: Path, fetch: Fetch, claims: ClaimResolver, tokens: TokenRequest
) -> dict[str, Path]:
    """Materialize every volume of ``pod`` under ``work/volumes``; name -> host path."""
    result: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes", []):
        base = work / "volumes" / volume["name"]
        result[volume["name"]] = _volume_dir(pod, volume, base, fetch, claims, tokens)
    return result


def container_mounts(
    pod: Json, container: Json, volumes: dict[str, Path], env: dict[str, str]
) -> list[Mount]:
    """The bind mounts of ``container``, honouring ``readOnly``, ``subPath``, ``subPathExpr``."""
    read_only_claims = {
        v["name"]
        for v in pod["spec"].get("volumes", [])
        if v.get("persistentVolumeClaim", {}).get("readOnly")
    }
    mounts = []
    for vm in container.get("volumeMounts", []):
        name = vm["name"]
        if name not in volumes:
            raise ConfigError(f"volumeMount {name!r} of {container['name']} names no volume")
        source = volumes[name]
        sub = vm.get("subPath") or (expand(vm["subPathExpr"], env) if vm.get("subPathExpr") else "")
        if sub:
            source = _safe_join(source, sub)
            if not source.exists():
                source.mkdir(parents=True)
        mounts.append(
            Mount(
                source=source,
                target=vm["mountPath"],
                read_only=bool(vm.get("readOnly")) or name in read_only_claims,
            )
        )
    return mounts
