"""Run INSIDE an image by tests/images (the image's own python, standard library only): print JSON facts.

uid/gid/groups of the process; compilers and linkers on the search path or in
gcc's folders; pip caches anywhere; every installed distribution (every
``*.dist-info``/``*.egg-info`` on the file system, the venv's and Debian's);
the bytes under ``/opt/mmsearch`` and per entry of its site-packages.
"""
from __future__ import annotations

import json
import os
import re
import sys

SKIP = {"/proc", "/sys", "/dev"}
TOOL = re.compile(r"^(?:[a-z0-9_]+-linux-gnu-)?(?:gcc|g\+\+|c\+\+|cc|cpp|clang|clang\+\+|tcc|gfortran|ld|ld\.bfd|"
                  r"ld\.gold|as|rustc|cargo|go|cc1|cc1plus|collect2)(?:-\d+(?:\.\d+)*)?$")
GCC_DIRS = ("/usr/lib/gcc", "/usr/libexec/gcc", "/usr/local/libexec/gcc")
DIST = re.compile(r"^(?P<name>[^-]+)-[^-]+\.(?:dist|egg)-info$")
VENV = "/opt/mmsearch"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    bin_dirs = {d for d in os.environ.get("PATH", "").split(":") if d} | {"/bin", "/sbin", "/usr/bin", "/usr/sbin",
                                                                         "/usr/local/bin", f"{VENV}/bin"}
    compilers, caches, dists = set(), set(), set()
    venv_bytes, entries = 0, {}
    site = next((os.path.join(VENV, "lib", d, "site-packages") for d in sorted(os.listdir(f"{VENV}/lib"))
                 if d.startswith("python")), "") if os.path.isdir(f"{VENV}/lib") else ""
    for dirpath, dirnames, filenames in os.walk("/"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in SKIP]
        for d in dirnames:
            path = os.path.join(dirpath, d)
            if d == "pip" and os.path.basename(dirpath) == ".cache":
                caches.add(path)
            match = DIST.match(d)
            if match:
                dists.add(_canonical(match.group("name")))
        in_bin = dirpath in bin_dirs or dirpath.startswith(GCC_DIRS)
        for f in filenames:
            path = os.path.join(dirpath, f)
            if in_bin and TOOL.match(f) and os.access(path, os.X_OK):
                compilers.add(path)
            if dirpath.startswith(VENV):
                try:
                    size = os.lstat(path).st_size
                except OSError:
                    continue
                venv_bytes += size
                if site and (dirpath == site or dirpath.startswith(site + os.sep)):
                    rel = os.path.relpath(path, site).split(os.sep)[0]
                    key = re.sub(r"(\.libs|-[^-]+\.dist-info|\.dist-info)$", "", rel)
                    entries[key] = entries.get(key, 0) + size
    print(json.dumps({
        "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
        "python": sys.version.split()[0], "executable": sys.executable,
        "compilers": sorted(compilers), "pip_caches": sorted(caches), "distributions": sorted(dists),
        "venv_bytes": venv_bytes, "site_packages": dict(sorted(entries.items(), key=lambda kv: -kv[1])[:12]),
    }))


if __name__ == "__main__":
    main()
