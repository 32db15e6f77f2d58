"""The built-in demo corpus: the documentation of the installed Python standard library.

One document per public module, class, function and method: its qualified name
(``csv``, ``csv.DictReader``, ``os.path.join``, ``str.split``,
``pathlib.Path.read_text``) and the first paragraph of its docstring. It needs
no download and gives real results with a real model.

Decisions:
- Modules come from ``sys.stdlib_module_names`` (never site-packages), walked into
  sub-packages with ``pkgutil.iter_modules``; ``os.path`` is documented under that
  name (``posixpath``/``ntpath``/``genericpath`` are left out as its duplicates).
- Noise is skipped: private names (a ``_`` in any component), tests, ``__main__``
  modules, GUI/IDE and platform-specific packages, the codec modules under
  ``encodings``, deprecated aliases (``sre_*``), and modules with side effects on
  import (``this``, ``antigravity``, ``readline``). Hooks that tools
  replace at runtime (``sys.excepthook``, ``threading.excepthook``) are
  documented from their originals (``sys.__excepthook__``),
  so the corpus is the same in every process.
- ``prepare`` collects in a fresh interpreter (:func:`collect_isolated`), so a
  caller that imported torch or pytest (which patch stdlib functions) gets the
  same corpus. Modules are imported with warnings silenced and stdout/stderr
  captured; a module that fails to import (a missing C extension, another
  platform) is skipped, never fatal.
- A class or function is documented under the public module that defines it, or
  that re-exports it from a private module (``csv.reader`` comes from ``_csv``);
  each object once. Classes use their own docstring only (not an inherited one).
  Objects without a docstring are skipped: there would be nothing to answer.
- A document's text is the first paragraph that describes (:func:`first_paragraph`): a C
  function's docstring opens with its call signature (``time.monotonic``: "monotonic() -> float",
  then "Monotonic clock, cannot go backward."), which is passed over; taking the first paragraph as
  it stood left 336 documents of 5,524 with a bare signature as their text, unsearchable by
  meaning, and 62 more opening with one or several. Objects whose docstring is nothing but signatures
  (the ``ast`` node classes, named tuples such as ``inspect.ArgInfo``, ``datetime.date``,
  ``argparse.ArgumentParser.add_argument``: 90 on Python 3.11) are skipped like those without one.
- Methods: the public methods of every public class (functions, class and static
  methods, and the methods of C types such as ``str.split``), documented as
  ``<class>.<method>``: those the class defines and those it inherits from a
  private base (``random.Random.random`` comes from ``_random.Random``); a method
  inherited from a public class is documented under that class only. Bound methods
  that a module exposes as functions are documented under the name users call:
  ``random.randint`` (``Random.randint`` of the module's hidden instance),
  ``secrets.choice``. The built-in names drop the ``builtins`` prefix (``len``,
  ``str``, ``str.split``): that is how they are called. Methods about doubled
  the corpus and lifted every figure ``mmsearch job evaluate`` prints on the
  labelled set (docs/benchmarks.md).
- The labelled set :data:`QUERIES` (``stdlib_queries.jsonl``, beside this
  module so it is installed with it) labels documents by their ``question``
  (the qualified name, as this module writes it) and gives each query a
  ``split``: ``tune`` (the queries a choice such as the default fusion may be
  tuned on) or ``held-out`` (the ones it is then judged on). The demo's publish gate and
  ``evaluate`` use every query; ``bench/relevance.py`` uses the split. A query whose answers
  all left the corpus leaves the set ("add a command line option to a parser": the docstring
  of ``argparse.ArgumentParser.add_argument`` is two signatures).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import pkgutil
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable, Iterator

QUERIES = Path(__file__).with_name("stdlib_queries.jsonl")
MAX_ANSWER_CHARS = 1000

SKIPPED_MODULES = frozenset({
    "antigravity", "this", "readline", "rlcompleter",       # side effects on import
    "idlelib", "tkinter", "turtle", "turtledemo",           # GUI / IDE
    "test", "lib2to3", "ensurepip", "pydoc_data", "distutils",
    "msilib", "msvcrt", "nt", "winreg", "winsound",         # other platforms
    "sre_compile", "sre_constants", "sre_parse",            # deprecated aliases of re internals
    "posixpath", "ntpath", "genericpath", "nturl2path",     # documented as os.path
})
NO_SUBMODULES = frozenset({"encodings"})  # ~100 codec modules: noise for a search demo
ALIASES = {"os.path": ("posixpath", "genericpath")}  # public name -> modules defining its members


@dataclass(frozen=True)
class StdlibDoc:
    name: str      # qualified name, e.g. "csv.DictReader"
    kind: str      # "module" | "class" | "function" | "method"
    summary: str   # first paragraph of the docstring
    top: str       # top-level module, e.g. "csv"


# A call signature: ``monotonic() -> float``, ``B.find(sub[, start[, end]]) -> int``,
# ``enable(subcalls=True, builtins=True)``, ``deque([iterable[, maxlen]]) --> deque object``. What follows
# the arrow is a return type, not a description, when it is at most SIGNATURE_TAIL_WORDS words outside
# brackets, with no `` -- `` and no sentence break: ``getrandbits(k) -> x.  Generates an int ...`` and
# ``D.copy() -> a shallow copy of D`` describe themselves.
SIGNATURE = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*\s*"         # a (qualified) name
                       r"\([^()]*(?:\([^()]*\)[^()]*)*\)"               # its arguments
                       r"\s*(?:-+>\s*(?P<tail>\S.*))?")                  # what it returns
SIGNATURE_TAIL_WORDS = 4
_BRACKETED = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")


def is_signature(text: str) -> bool:
    """True when ``text`` is a bare call signature (see :data:`SIGNATURE`): nothing to search by meaning. Pure."""
    match = SIGNATURE.fullmatch(" ".join(text.split()))
    if match is None or text.count("(") != text.count(")") or text.count("[") != text.count("]"):
        return False  # unbalanced: the first line of a signature wrapped over two
    tail = match.group("tail") or ""
    return (" -- " not in tail and not re.search(r"\.\s", tail)
            and len(_BRACKETED.sub(" ", tail).split()) <= SIGNATURE_TAIL_WORDS)


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring that describes, on one line (at most MAX_ANSWER_CHARS).

    A C function's docstring opens with its signature (or several, one a line, some wrapped over two)
    and describes itself after it, on the next line or in the next paragraph: leading bare signatures
    are passed over, and so is an opening block of several signatures that say what they return
    (``bytes(int) -> bytes object of size given by the parameter ...``) when a paragraph follows it.
    "" when nothing but signatures is left (the document is then skipped, like one without a
    docstring). Pure.
    """
    if not doc or not isinstance(doc, str):
        return ""
    paragraphs = [para.splitlines() for para in re.split(r"\n\s*\n", inspect.cleandoc(doc))]
    for index, para in enumerate(paragraphs):
        lines = para
        while lines and is_signature(lines[0]):
            lines = lines[1:]
        text = " ".join(" ".join(lines).split())
        if not text or is_signature(text):
            continue
        if index + 1 < len(paragraphs) and len(para) > 1 and all(SIGNATURE.fullmatch(x.strip()) for x in para):
            continue
        return text[:MAX_ANSWER_CHARS]
    return ""


def is_noise(name: str) -> bool:
    parts = name.split(".")
    return (
        parts[0] in SKIPPED_MODULES
        or any(p.startswith("_") for p in parts)
        or any(p in ("test", "tests") or p.startswith("test_") for p in parts)
    )


def safe_import(name: str) -> ModuleType | None:
    """Import ``name`` quietly; None when it cannot be imported here."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except (Exception, SystemExit):
            return None


def _walk(name: str, module: ModuleType) -> Iterator[tuple[str, ModuleType]]:
    yield name, module
    if name == "os":
        yield "os.path", module.path
    path = getattr(module, "__path__", None)
    if path is None or name in NO_SUBMODULES:
        return
    for info in sorted(pkgutil.iter_modules(path, prefix=name + "."), key=lambda i: i.name):
        if is_noise(info.name):
            continue
        sub = safe_import(info.name)
        if sub is not None:
            yield from _walk(info.name, sub)


def iter_modules(roots: Iterable[str] | None = None) -> Iterator[tuple[str, ModuleType]]:
    """(qualified name, module) for every documented module, sorted; ``roots`` restricts to
    those modules and their sub-modules (e.g. ``["csv", "os.path", "json"]``).

    Raises ValueError naming a root that is not an importable public stdlib module.
    """
    if roots is None:
        tops = sorted(n for n in sys.stdlib_module_names if not is_noise(n))
        for top in tops:
            module = safe_import(top)
            if module is not None:
                yield from _walk(top, module)
        return
    for root in sorted(set(roots)):
        top = root.split(".")[0]
        if top not in sys.stdlib_module_names or is_noise(root):
            raise ValueError(f"{root!r} is not a public standard-library module")
        module = safe_import(root)
        if module is None and root == "os.path":
            module = safe_import("os").path  # type: ignore[union-attr]
        if module is None:
            raise ValueError(f"standard-library module {root!r} cannot be imported on this machine")
        yield from ((n, m) for n, m in _walk(root, module) if n == root or n.startswith(root + "."))


def _public_members(name: str, module: ModuleType) -> Iterator[tuple[str, object]]:
    exported = getattr(module, "__all__", None)
    if isinstance(exported, (list, tuple)) and all(isinstance(n, str) for n in exported):
        names = sorted(set(exported))
    else:
        names = sorted(n for n in dir(module) if not n.startswith("_"))
    owners = {name, *ALIASES.get(name, ())}
    for member in names:
        if member.startswith("_"):
            continue
        try:
            obj = getattr(module, member)
        except AttributeError:
            continue
        # hooks that tools replace at runtime (sys.excepthook, threading.excepthook): the originals, which
        # the module itself keeps (builtins.__str__ is the module object's own method, not str's original)
        obj = vars(module).get(f"__{member}__", obj)
        if is_bound_alias(obj):
            yield member, obj  # random.randint: a method of the module's own instance, called as a function
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        owner = getattr(obj, "__module__", None) or ""
        private_owner = any(p.startswith("_") for p in owner.split(".")) if owner else False
        if owner in owners or private_owner:
            yield member, obj


_METHOD_TYPES = ("method_descriptor", "classmethod_descriptor", "builtin_function_or_method")


def is_bound_alias(obj: object) -> bool:
    """A method bound to an instance (not a module, not a class) that a module exports as a function."""
    bound = getattr(obj, "__self__", None)
    return ((inspect.ismethod(obj) or inspect.isbuiltin(obj)) and bound is not None
            and not isinstance(bound, ModuleType) and not inspect.isclass(bound))


def _is_private(cls: type) -> bool:
    """A class users never name: private itself (argparse._ActionsContainer) or from a private module."""
    module = getattr(cls, "__module__", "") or ""
    return cls.__name__.startswith("_") or any(p.startswith("_") for p in module.split("."))


def class_methods(cls: type) -> list[tuple[str, object]]:
    """(name, function) of ``cls``'s public methods: its own and those of its private bases (sorted)."""
    found: dict[str, object] = {}
    for base in getattr(cls, "__mro__", (cls,)):
        if base is not cls and not _is_private(base):
            continue
        for name, value in vars(base).items():
            if name.startswith("_") or name in found:
                continue
            func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            if inspect.isfunction(func) or type(func).__name__ in _METHOD_TYPES:
                found[name] = func
    return sorted(found.items())


def collect(roots: Iterable[str] | None = None) -> list[StdlibDoc]:
    """Every documented module, class, function and method, sorted by qualified name, each once."""
    docs: dict[str, StdlibDoc] = {}
    seen: set[int] = set()

    def add(qualified: str, kind: str, doc: object, top: str) -> None:
        summary = first_paragraph(doc)  # type: ignore[arg-type]
        if summary and qualified not in docs:
            docs[qualified] = StdlibDoc(qualified, kind, summary, top)

    for name, module in iter_modules(roots):
        top = name.split(".")[0]
        add(name, "module", module.__doc__, top)
        prefix = "" if name == "builtins" else f"{name}."  # len, str.split: the names users call
        for member, obj in _public_members(name, module):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if not inspect.isclass(obj):
                add(f"{prefix}{member}", "function", getattr(obj, "__doc__", None), top)
                continue
            add(f"{prefix}{member}", "class", obj.__dict__.get("__doc__"), top)
            for method, func in class_methods(obj):
                if id(func) not in seen:
                    seen.add(id(func))
                    add(f"{prefix}{member}.{method}", "method", getattr(func, "__doc__", None), top)
    return [docs[k] for k in sorted(docs)]


def collect_isolated(roots: Iterable[str] | None = None, timeout: float = 600.0) -> list[StdlibDoc]:
    """:func:`collect` in a fresh interpreter, so the corpus never depends on what the caller
    imported or patched (torch, pytest and others replace stdlib functions at runtime)."""
    import subprocess

    from mmsearch.jobs.jsonl import json_objects  # not at the top: the collecting interpreter imports no typer

    args = [sys.executable, "-m", "mmsearch.jobs.sources.stdlib", *(roots or [])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode == 2:
        raise ValueError(result.stderr.strip())
    if result.returncode != 0:
        raise RuntimeError(f"collecting the stdlib corpus failed: {result.stderr.strip()[-500:]}")
    return [StdlibDoc(**row) for _, row in json_objects(result.stdout, "the stdlib collector's output")]


if __name__ == "__main__":
    import dataclasses
    import json

    try:
        collected = collect(sys.argv[1:] or None)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    out = sys.stdout
    for doc in collected:
        out.write(json.dumps(dataclasses.asdict(doc)) + "\n")
