"""Build images with docker/images.py and run them the way the kubelet runs a pod's container.

:class:`ImageBuild` runs ``docker/images.py build`` (the one way images are
built, also behind ``make images``) in the background. :class:`ContainerSpec` is what a pod
manifest says about one container: command/args (Kubernetes semantics: command
replaces the image's ENTRYPOINT, args its CMD), environment, user and groups,
a read-only root file system, and volume mounts. :func:`start` runs it:

- buildah / podman store: no OCI runtime works in our sandbox (``podman run``
  cannot set rlimits), and ``buildah run`` has no read-only root. So the
  container is the engine's own working container (``buildah from`` +
  ``buildah mount``: a writable root over the image, where mount points are
  made as a runtime makes them), entered like a runtime does: a private mount
  namespace (``unshare --mount``) where the root is bind-mounted over itself,
  ``/proc`` and ``/dev`` and the pod's volumes are mounted, the root is made
  read-only when the pod says so, then ``setpriv --no-new-privs chroot
  --userspec`` drops to the pod's user (no capabilities are left: the user
  is not root and may not gain privileges) and ``env -i`` sets exactly the
  image's and the pod's environment. The network is the host's; tests give
  every pod its own ports.
- docker: ``docker run`` with the same settings as flags.

Every wait fails with the container's exit code and the tail of its log.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.loops import NotReached, eventually

ROOT = Path(__file__).resolve().parents[2]
IMAGES_PY = ROOT / "docker" / "images.py"


class ContainerError(AssertionError):
    """A container did not do what the test waited for; the message has its log."""


def images_py(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(IMAGES_PY), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def engine_name() -> str:
    """The engine docker/images.py picks (CONTAINER_ENGINE or detected); ContainerError when none runs."""
    result = images_py("engine", timeout=60)
    if result.returncode != 0:
        raise ContainerError(result.stderr.strip())
    return result.stdout.strip()


class ImageBuild:
    """``docker/images.py build --content-tag NAMES`` running in the background (started early, so the
    builds overlap other tests); an image built from the same inputs is reused. Output in ``workdir``."""

    def __init__(self, names: list[str], repo: str, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.names, self.report, self.log = names, workdir / "build.json", workdir / "build.log"
        self.report.unlink(missing_ok=True)
        # IMAGE_TAG set as make sets it for every recipe (`make test` runs these tests): --content-tag ignores it
        env = {**os.environ, "IMAGE_TAG": os.environ.get("IMAGE_TAG") or "0.0.0-make"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(IMAGES_PY), "build", *names, "--repo", repo,
                                          "--content-tag", "--json", str(self.report)], cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def result(self, timeout: float = 3600) -> list[dict]:
        """The build records; ContainerError with images.py's error (it names the failing step)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise ContainerError(f"building {self.names} took more than {timeout:.0f} s; log: {self.log}") from None
        text = self.log.read_text(errors="replace")
        if code != 0:
            start = text.rfind("\nerror: ")
            raise ContainerError((text[start + 1:] if start >= 0 else text[-6000:]).strip()[-8000:])
        return json.loads(self.report.read_text())

    def cancel(self) -> None:
        if self.proc.poll() is None:
            with _suppress():
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Mount:
    host: Path
    target: str
    read_only: bool = False


@dataclass
class ContainerSpec:
    name: str                              # for messages (the pod's container name)
    image: str
    command: list[str] | None = None       # Kubernetes `command`: replaces ENTRYPOINT
    args: list[str] | None = None          # Kubernetes `args`: replaces CMD
    env: dict[str, str] = field(default_factory=dict)
    user: int | None = None                # runAsUser; None: the image's USER
    group: int | None = None               # runAsGroup
    groups: tuple[int, ...] = ()           # fsGroup and supplementalGroups
    read_only: bool = False                # readOnlyRootFilesystem
    mounts: list[Mount] = field(default_factory=list)
    workdir: str | None = None


def image_config(engine: str, image: str) -> dict:
    """The image's config (Entrypoint, Cmd, Env, User, WorkingDir) from the engine's store."""
    tool = "docker" if engine == "docker" else "podman"
    out = subprocess.run([tool, "image", "inspect", image], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ContainerError(f"cannot inspect image {image}: {out.stderr.strip()}")
    return json.loads(out.stdout)[0].get("Config") or {}


def argv_for(spec: ContainerSpec, config: dict) -> list[str]:
    """What the container executes, as Kubernetes composes it from the pod and the image."""
    entrypoint, cmd = config.get("Entrypoint") or [], config.get("Cmd") or []
    if spec.command is not None:
        return [*spec.command, *(spec.args or [])]
    return [*entrypoint, *(spec.args if spec.args is not None else cmd)]


def _user_of(config: dict, root: Path | None) -> tuple[int, int]:
    user = (config.get("User") or "0").split(":")
    if not user[0].isdigit():
        if root is None:
            raise ContainerError(f"image user {user[0]!r} is a name; the pods run numeric users")
        entry = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
                     if line.split(":")[0] == user[0])
        return int(entry[2]), int(entry[3])
    return int(user[0]), int(user[1]) if len(user) > 1 and user[1].isdigit() else int(user[0])


@dataclass
class Running:
    spec: ContainerSpec
    argv: list[str]
    proc: subprocess.Popen
    log: Path
    _cleanup: Callable[[], None]

    def exited(self) -> int | None:
        return self.proc.poll()

    def output(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        code = self.proc.poll()
        state = "is running" if code is None else f"exited with code {code}"
        return (f"container {self.spec.name} ({self.spec.image}, `{shlex.join(self.argv)}`) {state}; "
                f"its log:\n{self.output()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ContainerError(f"still running after {timeout:.0f} s: {self.describe()}") from None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM (what the kubelet sends), SIGKILL to its process group after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with _suppress():
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything it started and left behind
        self._cleanup()
        return self.proc.returncode


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def wait_until(running: Running, what: str, probe: Callable[[], bool], timeout: float) -> None:
    """Poll ``probe`` until it is true; ContainerError naming ``what`` if the container exits or time runs out."""
    def ready() -> bool:
        if running.exited() is not None:
            raise ContainerError(f"{what}: {running.describe()}")
        try:
            return bool(probe())
        except Exception:  # noqa: BLE001 - not answering yet is the normal case
            return False
    try:
        eventually(ready, what, timeout=timeout, interval=0.3)
    except NotReached:
        raise ContainerError(f"{what}: not within {timeout:.0f} s; {running.describe()}") from None


def run_to_end(engine: str, spec: ContainerSpec, workdir: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``spec`` until it exits: (exit code, its log)."""
    running = start(engine, spec, workdir)
    try:
        code = running.wait(timeout)
        return code, running.output(400)
    finally:
        running.stop()


def start(engine: str, spec: ContainerSpec, workdir: Path) -> Running:
    """Start ``spec`` in the background; its log goes to ``workdir/<name>-<id>.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{spec.name}-{uuid.uuid4().hex[:8]}.log"
    if engine == "docker":
        return _start_docker(spec, log)
    return _start_chroot(engine, spec, log)


def _start_docker(spec: ContainerSpec, log: Path) -> Running:
    config = image_config("docker", spec.image)
    argv = argv_for(spec, config)
    name = f"mmsearch-test-{uuid.uuid4().hex[:10]}"
    cmd = ["docker", "run", "--rm", "--name", name, "--network", "host", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges"]
    if spec.read_only:
        cmd.append("--read-only")
    if spec.user is not None:
        cmd += ["--user", f"{spec.user}:{spec.group if spec.group is not None else spec.user}"]
    cmd += [f for g in spec.groups for f in ("--group-add", str(g))]
    cmd += [f for m in spec.mounts for f in ("-v", f"{m.host}:{m.target}{':ro' if m.read_only else ''}")]
    cmd += [f for k, v in spec.env.items() for f in ("-e", f"{k}={v}")]
    if spec.workdir:
        cmd += ["-w", spec.workdir]
    if spec.command is not None:
        cmd += ["--entrypoint", argv[0], spec.image, *argv[1:]]
    else:
        cmd += [spec.image, *(spec.args or [])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Running(spec, argv, proc, log,
                   lambda: subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60))


def in_root(root: Path, path: str) -> Path:
    """``path`` inside the container root ``root``, its symlinks resolved against ``root`` (never the host's:
    Debian's /var/run -> /run must not lead a mount to the host's /run)."""
    remaining = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while remaining:
        part = remaining.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            assert hops < 40, f"too many symlinks resolving {path} in {root}"
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = []
            remaining = [p for p in link.split("/") if p not in ("", ".")] + remaining
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _tool(engine: str) -> str:
    return "buildah" if engine == "buildah" or shutil.which("buildah") else "podman"


def _start_chroot(engine: str, spec: ContainerSpec, log: Path) -> Running:
    tool = _tool(engine)
    config = image_config(engine, spec.image)
    name = f"mmsearch-test-{uuid.uuid4().hex[:10]}"
    create = [tool, "from", "--pull-never", "--name", name, spec.image] if tool == "buildah" else \
        [tool, "create", "--name", name, spec.image]
    made = subprocess.run(create, capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        raise ContainerError(f"`{shlex.join(create)}` failed: {made.stderr.strip()}")

    def cleanup() -> None:
        subprocess.run([tool, "umount", name], capture_output=True, timeout=120)
        subprocess.run([tool, "rm", name], capture_output=True, timeout=300)

    try:
        root = Path(subprocess.run([tool, "mount", name], capture_output=True, text=True, check=True,
                                   timeout=120).stdout.strip())
        argv = argv_for(spec, config)
        image_uid, image_gid = _user_of(config, root)
        uid = spec.user if spec.user is not None else image_uid
        gid = spec.group if spec.group is not None else (image_gid if spec.user is None else uid)
        env = dict(e.split("=", 1) for e in config.get("Env") or [])
        env.update(spec.env)
        workdir = spec.workdir or config.get("WorkingDir") or "/"
        script = ["set -e", f"R={shlex.quote(str(root))}", 'mount --bind "$R" "$R"']
        binds = [(Path("proc"), in_root(root, "/proc"), False), (Path("/dev"), in_root(root, "/dev"), False)]
        binds += [(Path(f), in_root(root, f), True) for f in ("/etc/hosts", "/etc/resolv.conf") if Path(f).exists()]
        binds += [(m.host, in_root(root, m.target), m.read_only) for m in spec.mounts]
        for host, target, read_only in binds:
            if host == Path("proc") or host.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch(exist_ok=True)
            if host == Path("proc"):
                script.append(f"mount -t proc proc {shlex.quote(str(target))}")
                continue
            script.append(f"mount --rbind {shlex.quote(str(host))} {shlex.quote(str(target))}")
            if read_only:
                script.append(f"mount -o remount,bind,ro {shlex.quote(str(target))}")
        if spec.read_only:
            script.append('mount -o remount,bind,ro "$R"')
        groups = ",".join(str(g) for g in dict.fromkeys([gid, *spec.groups]))
        execute = ["setpriv", "--no-new-privs", "chroot", f"--userspec={uid}:{gid}", f"--groups={groups}",
                   str(root), "/usr/bin/env", "-i", f"--chdir={workdir}",
                   *(f"{k}={v}" for k, v in env.items()), *argv]
        script.append("exec " + shlex.join(execute))
        with open(log, "wb") as out:
            proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                     "\n".join(script)], stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    except BaseException:
        cleanup()
        raise
    return Running(spec, argv, proc, log, cleanup)
