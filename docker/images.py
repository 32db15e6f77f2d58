"""Build, inspect and push the container images of docker/, with whichever engine is present.

    python3 docker/images.py base                     # the local Debian bookworm base (debootstrap)
    python3 docker/images.py build [NAME ...]         # every image, or the ones named
    python3 docker/images.py push [NAME ...]
    python3 docker/images.py engine                   # which engine would be used

`make base-image`, `make images` and `make push-images` call it; so do the image
tests (tests/images/), so an image is built one way only. Standard library only.
The engine (``--engine`` / ``CONTAINER_ENGINE``: docker, podman or buildah), the
local debootstrap base, ``PYTHON_IMAGE``, ``STORAGE_DRIVER`` and the caches
under ``.cache/images/`` are described in docs/images.md.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "images"
ENGINES = ("docker", "podman", "buildah")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The local base: what debootstrap installs, and the paths removed from it afterwards.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_PRUNE = ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*",
              "usr/share/man/*", "usr/share/info/*", "var/log/*.log", "var/log/apt/*")
BASE_KEEP_LOCALES = ("locale.alias",)


class ImagesError(RuntimeError):
    """A failure the user can act on; printed as one ``error:`` line (plus the engine's output)."""


@dataclass(frozen=True)
class Image:
    name: str                 # what `images.py build NAME` and the tests call it
    dockerfile: str           # relative to the repository root
    target: str
    repository: str           # the last part of the image reference
    build_args: dict[str, str] = field(default_factory=dict)
    large: bool = False       # CUDA wheels: built by the tests only with MMSEARCH_BUILD_GPU_IMAGES=1
    description: str = ""


IMAGES = {i.name: i for i in (
    Image("services", "docker/Dockerfile", "services", "mmsearch",
          description="mmsearch serve preprocess | serving | web (the chart's image.repository)"),
    Image("operator", "docker/Dockerfile", "operator", "mmsearch-operator",
          description="mmsearch operator (the chart's operator.image.repository)"),
    Image("jobs-cpu", "docker/jobs.Dockerfile", "jobs", "mmsearch-jobs-cpu", {"DEVICE": "cpu"},
          description="mmsearch job <stage> except export, onnxruntime on CPU"),
    Image("jobs", "docker/jobs.Dockerfile", "jobs", "mmsearch-jobs", {"DEVICE": "gpu"}, large=True,
          description="mmsearch job <stage> except export, onnxruntime-gpu with its CUDA and cuDNN wheels"),
    Image("jobs-export", "docker/jobs.Dockerfile", "jobs-export", "mmsearch-jobs-export", {"DEVICE": "gpu"},
          large=True, description="every stage including export (torch from PyPI, with CUDA)"),
)}


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], *, capture: bool = False, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, text=True, capture_output=capture, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip()[-3000:] if capture else ""
        raise ImagesError(f"`{shlex.join(argv)}` failed with exit code {result.returncode}"
                          + (f":\n{detail}" if detail else ""))
    return result


# --- the engine -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Engine:
    name: str

    @property
    def store(self) -> str:
        """The tool that reads the image store: docker, or podman for the buildah/podman store."""
        return "docker" if self.name == "docker" else "podman"

    def cli(self, tool: str | None = None) -> list[str]:
        tool = tool or self.name
        if tool == "docker":
            return ["docker"]
        driver = os.environ.get("STORAGE_DRIVER")
        return [tool, "--storage-driver", driver] if driver else [tool]

    def image_exists(self, ref: str) -> bool:
        if self.name == "docker":
            return run(["docker", "image", "inspect", ref], capture=True, check=False).returncode == 0
        if shutil.which("podman"):
            return run(self.cli("podman") + ["image", "exists", ref], capture=True, check=False).returncode == 0
        return run(self.cli("buildah") + ["inspect", "--type", "image", ref], capture=True,
                   check=False).returncode == 0

    def remove_other_tags(self, ref: str) -> list[str]:
        """Remove the images of ``ref``'s repository with another tag (older content tags); their refs."""
        repository, tag = ref.rsplit(":", 1)
        tool = self.cli(self.store) if self.store != "podman" or shutil.which("podman") else self.cli("buildah")
        listed = run(tool + ["images", "--format", "{{.Tag}}", repository], capture=True, check=False).stdout
        old = [f"{repository}:{t}" for t in listed.split() if t not in (tag, "<none>")]
        if old:
            run(tool + ["rmi", *old], capture=True, check=False)
        return old

    def inspect(self, ref: str) -> dict:
        """The image's config (Entrypoint, Cmd, Env, User, WorkingDir) and its size in bytes."""
        if self.store == "podman" and not shutil.which("podman"):
            raise ImagesError("reading the buildah image store needs podman: apt-get install podman")
        out = run(self.cli(self.store) + ["image", "inspect", ref], capture=True).stdout
        data = json.loads(out)[0]
        return {"config": data.get("Config") or {}, "size": int(data.get("Size") or 0), "id": data["Id"]}


def detect_engine(requested: str | None = None) -> Engine:
    requested = requested or os.environ.get("CONTAINER_ENGINE") or ""
    if requested:
        if requested not in ENGINES:
            raise ImagesError(f"CONTAINER_ENGINE={requested!r}: use one of {', '.join(ENGINES)}")
        if not shutil.which(requested):
            raise ImagesError(f"CONTAINER_ENGINE={requested}: `{requested}` is not installed")
        return Engine(requested)
    if shutil.which("docker") and run(["docker", "info"], capture=True, check=False).returncode == 0:
        return Engine("docker")
    for name in ("buildah", "podman"):
        if shutil.which(name):
            return Engine(name)
    raise ImagesError("no container engine: install docker, podman or buildah "
                      "(Debian: `make system-deps` installs buildah, podman and debootstrap)")


# --- the local base image -----------------------------------------------------------------------

def debian_mirror() -> str:
    """``DEBIAN_MIRROR``, else the first Debian archive apt's sources name (not the security one)."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    texts = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
        try:
            texts.append(Path(path).read_text())
        except OSError:
            continue
    for text in texts:
        for match in re.finditer(r"(?m)^\s*(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text):
            uri = match.group(1)
            if "security" not in uri and uri.startswith(("http://", "https://", "file:/")):
                return uri
    return "http://deb.debian.org/debian"


def base_ref() -> str:
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_PRUNE, BASE_KEEP_LOCALES])
    return f"localhost/mmsearch-base:{BASE_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}"


def _prune(rootfs: Path) -> None:
    for pattern in BASE_PRUNE:
        for path in glob.glob(str(rootfs / pattern)):
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    locales = rootfs / "usr/share/locale"
    for path in locales.glob("*"):
        if path.name not in BASE_KEEP_LOCALES:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def ensure_base(engine: Engine) -> str:
    """The local base image reference; built with debootstrap and imported only when missing."""
    ref = base_ref()
    if engine.name == "docker":
        raise ImagesError("the local base is for buildah and podman; docker builds FROM the Dockerfiles' "
                          "default python image (or set PYTHON_IMAGE)")
    if engine.image_exists(ref):
        log(f"base image {ref}: present, reused")
        return ref
    if not shutil.which("podman"):
        raise ImagesError("importing the base image needs podman (buildah has no `import`): apt-get install podman")
    tarball = CACHE / f"{ref.rsplit(':', 1)[1]}-rootfs.tar"
    if tarball.exists():
        log(f"base image {ref}: importing the cached root file system {tarball.relative_to(ROOT)}")
    else:
        if not shutil.which("debootstrap"):
            raise ImagesError("building the base image needs debootstrap: apt-get install debootstrap")
        if os.geteuid() != 0:
            raise ImagesError("debootstrap must run as root (sudo make base-image)")
        CACHE.mkdir(parents=True, exist_ok=True)
        mirror = debian_mirror()
        start = time.monotonic()
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            log(f"base image {ref}: debootstrap {BASE_SUITE} from {mirror} (about a minute)")
            result = run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                          BASE_SUITE, str(rootfs), mirror], capture=True, check=False)
            if result.returncode != 0:
                raise ImagesError(f"debootstrap {BASE_SUITE} from {mirror} failed (set DEBIAN_MIRROR to "
                                  f"another mirror?):\n{(result.stdout + result.stderr)[-3000:]}")
            _prune(rootfs)
            partial = tarball.with_suffix(".partial")
            run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."])
            partial.rename(tarball)
        log(f"base image {ref}: root file system made in {time.monotonic() - start:.0f} s")
    run(engine.cli("podman") + ["import", "--change", 'CMD ["/bin/bash"]', str(tarball), ref], capture=True)
    log(f"base image {ref}: imported")
    return ref


# --- building -------------------------------------------------------------------------------------

def copied_paths(dockerfile: Path) -> list[str]:
    """The build-context paths the Dockerfile COPYs (the image's only inputs besides the base)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    paths = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
            paths += [w for w in words[1:-1] if not w.startswith("--")]
    return paths


def content_hash(image: Image, base: str) -> str:
    """12 hex characters of what the image is built from: Dockerfile, copied files, build args, base."""
    digest = hashlib.sha256()
    dockerfile = ROOT / image.dockerfile
    for part in (image.dockerfile, image.target, json.dumps(image.build_args, sort_keys=True), base):
        digest.update(part.encode() + b"\0")
    files = [dockerfile]
    for rel in copied_paths(dockerfile):
        path = ROOT / rel
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for path in files:
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_argv(engine: Engine, image: Image, ref: str, python_image: str | None) -> list[str]:
    args = {**image.build_args, **({"PYTHON_IMAGE": python_image} if python_image else {})}
    flags = [f for key, value in sorted(args.items()) for f in ("--build-arg", f"{key}={value}")]
    flags += ["-f", str(ROOT / image.dockerfile), "--target", image.target, "-t", ref]
    if engine.name == "docker":
        return ["docker", "build", *flags, str(ROOT)]
    # chroot isolation: no OCI runtime needed; the host's CA bundle lets pip reach the index as the host does.
    extra = ["--isolation", "chroot", "--network", "host", "--layers"]
    if CA_BUNDLE.exists():
        extra += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    verb = "bud" if engine.name == "buildah" else "build"
    return [*engine.cli(), verb, *extra, *flags, str(ROOT)]


def _stream(argv: list[str], env: dict[str, str], log_path: Path, name: str) -> tuple[int, list[str]]:
    """Run a build, its output shown as it comes (prefixed with the image name and the seconds since
    the start) and kept in ``log_path``; (exit code, output lines)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start, lines = time.monotonic(), []
    with open(log_path, "w") as log_file:
        log_file.write(f"$ {shlex.join(argv)}\n")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **env}, errors="replace")
        for line in proc.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            lines.append(line)
            stamped = f"{time.monotonic() - start:7.1f}s {line}"
            log_file.write(stamped + "\n")
            print(f"[{name}] {stamped}", file=sys.stderr, flush=True)
        return proc.wait(), lines


def version() -> str:
    match = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert match, "pyproject.toml has no version"
    return match.group(1)


def resolve_python_image(engine: Engine, python_image: str | None) -> str | None:
    """The base passed as PYTHON_IMAGE: the one asked for, the local base (buildah/podman), or the default."""
    if python_image:
        return python_image
    return None if engine.name == "docker" else ensure_base(engine)


def build(engine: Engine, names: list[str], *, repo: str, tag: str | None, python_image: str | None,
          reuse: bool = False) -> list[dict]:
    """Build ``names``; one record per image (ref, seconds, size, reused). ``tag`` None: content tags."""
    base = resolve_python_image(engine, python_image)
    base_id = engine.inspect(base)["id"] if base else "default"
    env = {"DOCKER_BUILDKIT": "1"} if engine.name == "docker" else {"TMPDIR": str(CACHE / "tmp")}
    (CACHE / "tmp").mkdir(parents=True, exist_ok=True)
    records = []
    for name in names:
        image = IMAGES[name]
        ref = f"{repo}/{image.repository}:{tag or version() + '-' + content_hash(image, base_id)}"
        start = time.monotonic()
        reused = reuse and engine.image_exists(ref)
        if reused:
            log(f"{name}: {ref} is built from the same inputs already, reused")
        else:
            log(f"{name}: building {ref} ({image.dockerfile} --target {image.target}"
                f"{''.join(f' --build-arg {k}={v}' for k, v in image.build_args.items())}) with {engine.name}")
            code, output = _stream(build_argv(engine, image, ref, base), env, CACHE / "logs" / f"{name}.log", name)
            if code != 0:
                step = next((line for line in reversed(output) if "STEP" in line or "ERROR" in line
                             or line.startswith("error")), output[-1] if output else "")
                raise ImagesError(f"building image {name} ({image.dockerfile} --target {image.target}) failed: "
                                  f"{step}\n--- last lines of the build (all of it: "
                                  f"{(CACHE / 'logs' / f'{name}.log').relative_to(ROOT)}) ---\n"
                                  + "\n".join(output[-40:]))
        seconds = time.monotonic() - start
        if tag is None:
            for old in engine.remove_other_tags(ref):
                log(f"{name}: removed {old} (built from older inputs)")
        size = engine.inspect(ref)["size"]
        log(f"{name}: {ref} {'reused' if reused else f'built in {seconds:.0f} s'}, {size / 1e6:.0f} MB")
        records.append({"name": name, "ref": ref, "seconds": round(seconds, 1), "size": size, "reused": reused,
                        "base": base or "Dockerfile default", "engine": engine.name})
    return records


def push(engine: Engine, names: list[str], *, repo: str, tag: str) -> None:
    for name in names:
        ref = f"{repo}/{IMAGES[name].repository}:{tag}"
        if engine.name == "docker":
            run(["docker", "push", ref])
        else:
            run([*engine.cli(), "push", ref])
        log(f"pushed {ref}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", help="docker, podman or buildah (default: CONTAINER_ENGINE, else detected)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("engine", help="print the engine that would be used")
    sub.add_parser("base", help="build (or reuse) the local Debian base image and print its reference")
    for verb in ("build", "push"):
        p = sub.add_parser(verb, help=f"{verb} images (default: all)")
        p.add_argument("names", nargs="*", help=f"any of {', '.join(IMAGES)}")
        p.add_argument("--repo", default=os.environ.get("IMAGE_REPO") or "ghcr.io/mmsearch")
        p.add_argument("--tag", help="default: IMAGE_TAG, else the version of pyproject.toml "
                                     "(build --content-tag: version-<input hash>, IMAGE_TAG ignored)")
    build_parser = sub.choices["build"]
    build_parser.add_argument("--python-image", default=os.environ.get("PYTHON_IMAGE") or None)
    build_parser.add_argument("--content-tag", action="store_true",
                              help="tag VERSION-<hash of the build inputs>, reuse an image with that tag, "
                                   "remove the repository's other tags")
    build_parser.add_argument("--json", type=Path, help="write the build records (refs, seconds, sizes) here")
    args = parser.parse_args(argv)
    try:
        engine = detect_engine(args.engine)
        if args.command == "engine":
            print(engine.name)
            return 0
        if args.command == "base":
            print(ensure_base(engine))
            return 0
        names = args.names or list(IMAGES)
        unknown = [n for n in names if n not in IMAGES]
        if unknown:
            raise ImagesError(f"unknown image {', '.join(unknown)}: use any of {', '.join(IMAGES)}")
        tag = args.tag or os.environ.get("IMAGE_TAG") or version()
        if args.command == "push":
            push(engine, names, repo=args.repo, tag=tag)
            return 0
        if args.content_tag and args.tag:  # (IMAGE_TAG, which make exports to every recipe, is ignored there)
            raise ImagesError("--content-tag and --tag exclude each other: drop one")
        records = build(engine, names, repo=args.repo, tag=None if args.content_tag else tag,
                        python_image=args.python_image, reuse=args.content_tag)
        if args.json:
            args.json.write_text(json.dumps(records, indent=1))
        for record in records:
            print(f"{record['ref']}\t{record['size'] / 1e6:.0f} MB\t{record['seconds']:.0f} s")
        return 0
    except ImagesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
