"""Read the container logs the pod runner captured (there is no kubelet to serve them).

Each container run writes ``<pods dir>/<namespace>_<pod>_<uid>/logs/<container>-<restart>.log``.
The newest pod of that name wins, so a re-created pod shows its own logs.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["container_log", "container_log_path", "pod_logs"]

_RUN = re.compile(r"^(?P<container>.+)-(?P<restart>\d+)\.log$")


def _runs(pod_dir: Path) -> dict[str, list[Path]]:
    runs: dict[str, list[tuple[int, Path]]] = {}
    for f in (pod_dir / "logs").glob("*.log"):
        m = _RUN.match(f.name)
        if m:
            runs.setdefault(m.group("container"), []).append((int(m.group("restart")), f))
    return {c: [p for _, p in sorted(items)] for c, items in runs.items()}


def _pod_dir(pods_dir: Path, namespace: str, pod: str) -> Path:
    candidates = [d for d in pods_dir.glob(f"{namespace}_{pod}_*") if d.is_dir()]
    if not candidates:
        raise LookupError(f"the pod runner has no logs of pod {namespace}/{pod} in {pods_dir}")
    return max(candidates, key=lambda d: d.stat().st_mtime)


def container_log(
    pods_dir: Path, namespace: str, pod: str, container: str | None, *, previous: bool = False
) -> str:
    """The log of one container (the only one when ``container`` is None)."""
    path = container_log_path(pods_dir, namespace, pod, container, previous=previous)
    return path.read_text(errors="replace")


def container_log_path(
    pods_dir: Path, namespace: str, pod: str, container: str | None, *, previous: bool = False
) -> Path:
    """The log file of one container's current (or previous) run; LookupError if none."""
    runs = _runs(_pod_dir(pods_dir, namespace, pod))
    if container is None:
        if len(runs) != 1:
            raise LookupError(
                f"pod {namespace}/{pod} has containers {sorted(runs)}: choose one with -c"
            )
        container = next(iter(runs))
    files = runs.get(container)
    if not files:
        raise LookupError(f"no log of container {container!r} in pod {namespace}/{pod}")
    if previous:
        if len(files) < 2:
            raise LookupError(f"container {container!r} of {namespace}/{pod} has not restarted")
        return files[-2]
    return files[-1]


def pod_logs(pods_dir: Path, namespace: str, pod: str, *, tail: int = 50) -> str:
    """The last lines of every container run of a pod, labelled, for test failure reports."""
    try:
        runs = _runs(_pod_dir(pods_dir, namespace, pod))
    except LookupError as exc:
        return str(exc)
    parts = []
    for _container, files in sorted(runs.items()):
        for f in files:
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {namespace}/{pod} {f.stem}\n" + "\n".join(lines))
    return "\n".join(parts)
