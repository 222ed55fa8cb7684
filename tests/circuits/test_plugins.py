"""Methods from outside the package: a class named as FILE.py:Class, and an installed package's entry point."""

import subprocess
import sys
import textwrap

import pytest

from circuitbench.circuits.methods import get_method, method_names, method_rows
from circuitbench.errors import CircuitbenchError
from circuitbench.results.store import read_unit
from circuitbench.runs.runner import RunConfig, run

RANKER = '''
from dataclasses import asdict, dataclass

import torch


@dataclass
class Ranker:
    """Ranks nodes by a seeded random permutation, scaled (a stand-in for a real method)."""

    scale: float = 1.0
    name = "ranker"

    def node_scores(self, problem):
        gen = torch.Generator().manual_seed(problem.seed)
        return self.scale * torch.rand(problem.index.size, generator=gen)

    def hyperparameters(self):
        return asdict(self)

    def cost(self, n_examples, n_nodes):
        return {"forward": 0, "backward": 0}


@dataclass
class WrongShape(Ranker):
    def node_scores(self, problem):
        return torch.zeros(3)


@dataclass
class NaNScores(Ranker):
    def node_scores(self, problem):
        out = torch.rand(problem.index.size)
        out[::7] = float("nan")
        return out


@dataclass
class ListScores(Ranker):
    def node_scores(self, problem):
        return [0.5] * problem.index.size


@dataclass
class NoScores(Ranker):
    def node_scores(self, problem):
        return None


@dataclass
class Raises(Ranker):
    def node_scores(self, problem):
        raise ValueError("my method broke")


@dataclass
class ListHyper(Ranker):
    def hyperparameters(self):
        return ["scale", 1.0]


@dataclass
class ObjectHyper(Ranker):
    def hyperparameters(self):
        return {"scale": object()}


class NotAMethod:
    name = "nope"
'''


@pytest.fixture
def ranker_file(tmp_path):
    path = tmp_path / "my-plugins" / "ranker.py"
    path.parent.mkdir()
    path.write_text(RANKER)
    return path


def test_a_method_class_named_by_its_file_runs_and_is_recorded(tmp_path, small_adapter, ranker_file):
    spec = f"{ranker_file}:Ranker"
    cfg = RunConfig(model="small", tasks=["lambda_func"], method=spec, method_kwargs={"scale": 2.0},
                    ablation="zero", min_accuracy=0.0, control=False, out=tmp_path / "out", show_progress=False,
                    search_examples=32)
    (row,) = run(cfg, small_adapter)
    assert row["method"] == spec and row["status"] in ("solved", "train_only", "target_missed") and row["nodes"] is not None
    (unit_file,) = [p for p in (tmp_path / "out" / "small").glob("lambda_func.*.parquet")
                    if not p.name.endswith(".edges.parquet")]
    assert "/" not in unit_file.name.removesuffix(".seed0.parquet").split(".", 1)[1]  # a file name, no folders
    _, _, prov = read_unit(unit_file)
    assert prov.unit.method == spec and prov.unit.method_kwargs == {"scale": 2.0}
    assert prov.method_origin is not None and prov.method_origin["package"] == "(a file)"


def test_a_bad_plugin_is_one_error_naming_it(small_adapter, ranker_file, tmp_path):
    with pytest.raises(CircuitbenchError, match=r"NotAMethod is not a circuitbench method: it lacks node_scores"):
        get_method(f"{ranker_file}:NotAMethod")
    with pytest.raises(CircuitbenchError, match=r"has no method class 'Missing'"):
        get_method(f"{ranker_file}:Missing")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no GPU here')\n")
    with pytest.raises(CircuitbenchError, match=r"running .*broken\.py failed \(RuntimeError: no GPU here\)"):
        get_method(f"{broken}:Ranker")
    cfg = RunConfig(model="small", tasks=["lambda_func"], method=f"{ranker_file}:WrongShape", ablation="zero",
                    min_accuracy=0.0, control=False, out=tmp_path / "out", show_progress=False, search_examples=32)
    with pytest.raises(CircuitbenchError, match=r"shape \(3,\), the model has \d+ nodes; node_scores must return"):
        run(cfg, small_adapter)


def _installed_plugin(site):
    """A throwaway package `myplug` 0.1 with an entry point `myrank` in `circuitbench.methods`, on `site`."""
    (site / "myplug").mkdir(parents=True)
    (site / "myplug" / "__init__.py").write_text(RANKER)
    info = site / "myplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[circuitbench.methods]\nmyrank = myplug:Ranker\n")
    (info / "top_level.txt").write_text("myplug\n")


@pytest.mark.slow
def test_an_entry_point_method_is_listed_with_its_package_and_runs_from_the_cli(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _installed_plugin(site)
    monkeypatch.syspath_prepend(str(site))
    assert "myrank" in method_names()
    (row,) = [r for r in method_rows() if r["method"] == "myrank"]
    assert row["from"] == "myplug 0.1" and "scale=1.0" in row["hyperparameters (defaults)"]
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    listed = subprocess.run([sys.executable, "-m", "circuitbench", "methods"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert listed.returncode == 0 and "myrank" in listed.stdout and "myplug 0.1" in listed.stdout
    done = subprocess.run([sys.executable, "-m", "circuitbench", "run", "--method", "myrank", "--tasks", "if_equals",
                           "--no-control", "--search-examples", "32", "--out", str(tmp_path / "out"), "--quiet",
                           "--format", "json"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert any(f'"status": "{s}"' in done.stdout for s in ("solved", "train_only", "target_missed"))
    (unit_file,) = (tmp_path / "out" / "tiny-sparse").glob("if_equals.myrank.seed0.parquet")
    assert read_unit(unit_file)[2].method_origin == {"module": "myplug", "package": "myplug", "version": "0.1"}


def test_the_docs_show_a_whole_external_method():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "docs" / "tutorials" / "bring-your-own.md").read_text()
    block = readme.split("```python\n# my_methods.py", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(textwrap.dedent("# my_methods.py" + block), namespace)  # noqa: S102 (the docs' own example)
    assert len([line for line in block.splitlines() if line.strip()]) <= 16  # a dozen lines or so
    method = namespace["TopActivation"]()
    assert method.name == "top_activation" and callable(method.node_scores)


FORMAT = '''
from pathlib import Path

from circuitbench.models.hub import ModelFormat, bundled_models
from circuitbench.models.native import load_native


def _load(directory, *, device, dtype, name, trust_remote_code, revision_info):
    target = (Path(directory) / "alias.txt").read_text().strip()
    return load_native(bundled_models()[target], device=device, dtype=dtype, name=name)


ALIAS = ModelFormat("alias", lambda d: (Path(d) / "alias.txt").is_file(), _load)
NOT_A_FORMAT = "oops"
'''


def test_a_model_format_from_an_installed_package_loads_its_directories(tmp_path, monkeypatch):
    import circuitbench
    from circuitbench.models.hub import MODEL_FORMATS

    site = tmp_path / "site"
    (site / "aliasfmt").mkdir(parents=True)
    (site / "aliasfmt" / "__init__.py").write_text(FORMAT)
    info = site / "aliasfmt-0.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aliasfmt\nVersion: 0.2\n")
    (info / "entry_points.txt").write_text("[circuitbench.models]\nalias = aliasfmt:ALIAS\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr("circuitbench.models.hub.MODEL_FORMATS", list(MODEL_FORMATS))  # leave the registry as found
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "alias.txt").write_text("tiny-sparse\n")
    adapter = circuitbench.load_model(str(model_dir), device="cpu")
    assert adapter.name == "my-model" and len(adapter.sites) == 16
    (info / "entry_points.txt").write_text("[circuitbench.models]\nbad = aliasfmt:NOT_A_FORMAT\n")
    with pytest.raises(CircuitbenchError, match=r"model format bad \(aliasfmt:NOT_A_FORMAT\): a str, not a"):
        circuitbench.load_model(str(model_dir), device="cpu")


@pytest.mark.parametrize("cls,message", [
    ("NaNScores", r"\d+ of its \d+ scores are NaN or infinite"),
    ("ListScores", r"its scores are list, not a tensor"),
    ("NoScores", r"its scores are NoneType, not a tensor"),
    ("Raises", r"its node_scores raised ValueError: my method broke"),
])
def test_a_plugin_whose_scores_rank_nothing_is_one_error_and_no_unit(small_adapter, ranker_file, tmp_path, cls,
                                                                     message):
    spec = f"{ranker_file}:{cls}"
    cfg = RunConfig(model="small", tasks=["lambda_func"], method=spec, ablation="zero", min_accuracy=0.0,
                    control=True, out=tmp_path / "out", show_progress=False, search_examples=32)
    with pytest.raises(CircuitbenchError, match=f"method {spec}: " + message):
        run(cfg, small_adapter)
    assert not list((tmp_path / "out").rglob("*.parquet"))  # no "solved" unit from scores that rank nothing


@pytest.mark.parametrize("cls,message", [("ListHyper", r"hyperparameters\(\) returned list; return a dict"),
                                         ("ObjectHyper", r"hyperparameters\(\) holds a value a unit cannot record")])
def test_a_plugin_whose_hyperparameters_cannot_be_recorded_is_one_error(small_adapter, ranker_file, tmp_path, cls,
                                                                        message):
    spec = f"{ranker_file}:{cls}"
    cfg = RunConfig(model="small", tasks=["lambda_func"], method=spec, ablation="zero", min_accuracy=0.0,
                    control=False, out=tmp_path / "out", show_progress=False, search_examples=32)
    with pytest.raises(CircuitbenchError, match=message):
        run(cfg, small_adapter)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.parquet"))
