"""What `pip install .` puts into site-packages: one import namespace, mmsearch, with every part inside it."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_only_the_mmsearch_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, timeout=600, cwd=tmp_path)
    (wheel,) = tmp_path.glob("mmsearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"mmsearch", f"{wheel.name.split('-py3')[0]}.dist-info"}
    for module in ("services/serving/pipeline/search.py", "services/web/app.py", "jobs/encode.py",
                   "operator/reconciler.py", "core/milvus/search.py", "reports/experiment_report.py"):
        assert f"mmsearch/{module}" in names, module
    assert not any("/tests/" in n or n.startswith("bench/") for n in names)
