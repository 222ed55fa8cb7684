import pytest

import circuitbench
from circuitbench.errors import ModelNotFoundError
from circuitbench.models.hub import bundled_models
from tests.models.conftest import FIXTURE_MODEL


def test_bundled_short_name_resolves():
    assert set(bundled_models()) == {"tiny-sparse", "tiny-dense"}  # the reference models; test fixtures stay in tests/
    adapter = circuitbench.load_model("tiny-sparse", device="cpu")
    assert adapter.name == "tiny-sparse"
    assert len(adapter.provenance["weights_sha256"]) == 64


def test_unknown_name_suggests_the_closest_bundled_model():
    with pytest.raises(ModelNotFoundError, match="Did you mean 'tiny-sparse'"):
        circuitbench.load_model("tiny-spars", device="cpu")


def test_directory_of_unknown_format_lists_its_files(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match=r"not a model directory.*Files present: weights\.bin"):
        circuitbench.load_model(str(tmp_path), device="cpu")


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "final_model.pt"
    f.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="is a file; pass the model's directory"):
        circuitbench.load_model(str(f), device="cpu")


def test_sites_cover_eight_kinds_per_layer_with_connecting_weights():
    adapter = circuitbench.load_model(str(FIXTURE_MODEL), device="cpu")
    assert len(adapter.sites) == 16
    by_name = {s.name: s for s in adapter.sites}
    for site in adapter.sites:
        w = adapter.site_weight(site)
        if site.source is None:
            assert site.kind in ("attn_in", "mlp_in") and w is None
        else:
            assert w.shape == (site.width, by_name[site.source].width)


def test_a_registered_model_format_is_detected_and_loaded(tmp_path):
    from circuitbench.models import hub

    calls = []

    def load(directory, **kw):
        calls.append((directory, kw["name"]))
        return circuitbench.load_model(str(FIXTURE_MODEL), device="cpu")

    fmt = hub.ModelFormat("my-format", lambda d: (d / "my.cfg").is_file(), load)
    hub.register_format(fmt, first=True)
    try:
        (tmp_path / "my.cfg").write_text("x")
        assert hub.detect_format(tmp_path) == "my-format"
        adapter = circuitbench.load_model(str(tmp_path), device="cpu")
        assert calls == [(tmp_path, tmp_path.name)] and adapter.sites
        with pytest.raises(ValueError, match="registered already"):
            hub.register_format(fmt)
    finally:
        hub.MODEL_FORMATS.remove(fmt)
