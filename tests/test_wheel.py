"""What users install: the built wheel, in a fresh venv, run from outside the source tree."""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ["pyproject.toml", "README.md", "LICENSE", "circuitbench", "task_specs", "baselines", "tests/fixtures"]
"""What the build could read (the packages' folders, with the maintainer scripts and results beside the data, and
the test fixtures): not the board. The test checks that only what users need ends up in the wheel."""


def test_every_package_on_disk_is_in_the_wheel_list():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "circuitbench").rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools].packages: {sorted(on_disk - listed)}"


@pytest.mark.slow
def test_the_built_wheel_installs_and_runs_circuitbench_run_from_outside_the_tree(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", *BUILD_INPUTS],
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:  # a clean copy of what the build reads: building must not write into the checkout
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((REPO / f).read_bytes())
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w",
                            str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    warnings = [line for line in (built.stdout + built.stderr).splitlines() if "Warning" in line or "!!" in line]
    assert not warnings, warnings  # e.g. setuptools' "data folders look like packages"
    (wheel,) = dist.glob("circuitbench-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n for n in names if n.startswith("circuitbench/baselines/models/")}
    assert {n.split("/")[3] for n in shipped} == {"tiny-sparse", "tiny-dense"}, shipped  # no test fixture model
    assert not [n for n in names if n.endswith(("regenerate.py", "submit_baselines.py", "check_saved.py"))]
    assert not [n for n in names if n.startswith(("tests/", "circuitbench/baselines/results"))]
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    # torch and the other dependencies from this environment, after the new venv's own packages: a .pth
    # line only appends a directory (its own .pth files, an editable checkout's included, are not run)
    child = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    Path(child, "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import circuitbench; print(circuitbench.__file__)"], cwd=work,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(env_dir)), where  # the wheel, not the checkout
    run = subprocess.run([str(env_dir / "bin" / "circuitbench"), "run", "--tasks", "while_return_true", "--steps", "4",
                          "--no-control", "--quiet", "--threads", "1", "--search-examples", "64",
                          "--out", str(work / "results")], cwd=work,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "while_return_true" in run.stdout and "solved" in run.stdout
    assert list((work / "results").rglob("*.circuit.safetensors"))
    from circuitbench.results.store import read_unit, unit_files

    (unit,) = unit_files(work / "results")
    assert read_unit(unit)[2].git_commit is None  # an installed wheel has no checkout to name
    listed = subprocess.run([str(env_dir / "bin" / "circuitbench"), "tasks", "list"], cwd=work, capture_output=True,
                            text=True, check=True).stdout
    assert listed.count("\n") >= 20  # the task specs ship in the wheel
    # the bundled bridges ship too: steer through them with the circuit just found
    steered = subprocess.run([str(env_dir / "bin" / "circuitbench"), "bridge", "steer", "--task", "while_return_true",
                              "--results", str(work / "results"), "--controls", "1", "--threads", "1", "--quiet"],
                             cwd=work, capture_output=True, text=True, timeout=600)
    assert steered.returncode == 0, steered.stderr[-3000:]
    assert "dense model through the bridges" in steered.stdout or "nothing was steered" in steered.stdout
    assert list((work / "results").rglob("*.steer.parquet"))
