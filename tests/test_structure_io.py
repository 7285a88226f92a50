import importlib.util
import warnings

import pytest
import torch

from neuroplastic.structure import compact
from neuroplastic.structure.io import export_onnx, load_compact, save_compact
from test_structure_compact import random_closing
from test_structure_trace import MLP, ZOO, make

HAS_ORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None


@pytest.mark.parametrize("name", sorted(ZOO))
def test_save_load_roundtrip_with_weights_only(name, tmp_path):
    model, x = make(name)
    small = compact(model, random_closing(model, x, seed=3), x)
    path = tmp_path / "small.pt"
    save_compact(small, path)
    payload = torch.load(path, weights_only=True)  # no pickled classes
    assert payload["format"] == "neuroplastic.compact"
    loaded = load_compact(ZOO[name][0], path).eval()  # a template class / factory works too
    assert torch.equal(loaded(x), small(x))
    for (k, v), (k2, v2) in zip(small.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_load_restores_a_bias_added_by_folding(tmp_path):
    model, x = make("mlp")
    with torch.no_grad():
        model.fc2.bias = None  # a consumer without bias gets one when a constant unit is folded
        model.fc1.weight[3:] = 0
        model.fc1.bias[3:] = 0.5
    small = compact(model, {"fc1": range(3)}, x, fold_constants=True)
    assert small.fc2.bias is not None
    save_compact(small, tmp_path / "m.pt")
    template = MLP().eval()
    template.fc2.bias = None
    loaded = load_compact(template, tmp_path / "m.pt")
    assert torch.equal(loaded(x), small(x))
    assert (loaded(x) - model(x)).abs().max() <= 1e-5


def test_load_rejects_foreign_files(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a file written by save_compact"):
        load_compact(MLP(), tmp_path / "x.pt")
    save_compact(MLP(), tmp_path / "m.pt")
    with pytest.raises(TypeError, match="template must be"):
        load_compact(3, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="template has no modules"):
        load_compact(torch.nn.Sequential(), tmp_path / "m.pt")


def _ort_outputs(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.skipif(not HAS_ORT, reason="optional extra 'onnx' (onnx, onnxruntime) is not installed")
@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2", "densenet"])
def test_compacted_model_runs_in_onnxruntime(name, tmp_path):
    model, x = make(name)
    small = compact(model, random_closing(model, x, seed=4), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated upstream
        export_onnx(small, x, tmp_path / "m.onnx")
    with torch.no_grad():
        expected = small(x)
        assert (_ort_outputs(tmp_path / "m.onnx", x) - expected).abs().max() <= 1e-4
        x7 = torch.randn(7, *x.shape[1:])  # dynamic batch
        assert (_ort_outputs(tmp_path / "m.onnx", x7) - small(x7)).abs().max() <= 1e-4


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside torch.export
@pytest.mark.skipif(not (HAS_ORT and HAS_ONNXSCRIPT), reason="onnx, onnxruntime and onnxscript not installed")
def test_dynamo_exporter(tmp_path):
    model, x = make("lenet5")
    small = compact(model, random_closing(model, x, seed=5), x)
    export_onnx(small, x, tmp_path / "m.onnx", exporter="dynamo")
    with torch.no_grad():
        assert (_ort_outputs(tmp_path / "m.onnx", x) - small(x)).abs().max() <= 1e-4


def test_export_rejects_unknown_exporter(tmp_path):
    with pytest.raises(ValueError, match="exporter must be"):
        export_onnx(MLP(), torch.zeros(2, 20), tmp_path / "m.onnx", exporter="tf")


def test_load_compact_names_the_argument_order_when_the_path_comes_first(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    save_compact(model, tmp_path / "m.pt")
    with pytest.raises(TypeError, match=r"load_compact takes \(template, path\)"):
        load_compact(tmp_path / "m.pt", model)
