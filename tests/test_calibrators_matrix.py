"""Matrix scaling and Dirichlet calibration: known answers, independent maximum-likelihood fits, torch-uncertainty."""
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segcal.calibrators import DirichletCalibration, MatrixScaling, load_calibrator
from segcal.calibrators.matrix import odir_penalty
from segcal.calibrators.nll import mean_nll

W_TRUE = torch.tensor([[0.6, 0.2, 0.0], [0.1, 0.4, -0.2], [0.0, 0.1, 0.8]])
B_TRUE = torch.tensor([0.3, -0.4, 0.1])


def miscalibrated(n_batches=8, seed=0):
    """Logits of a model whose true probabilities are ``softmax(W_TRUE z + B_TRUE)``; labels drawn from them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        z = 3 * torch.randn(4, 3, 16, 16, generator=g)
        p = torch.softmax(torch.einsum("ij,njhw->nihw", W_TRUE, z) + B_TRUE.view(1, 3, 1, 1), 1)
        labels = torch.multinomial(p.permute(0, 2, 3, 1).reshape(-1, 3), 1, generator=g).view(4, 16, 16)
        out.append((z, labels))
    return out


def _pixels(batches):
    z = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x, _ in batches])
    return z, torch.cat([y.flatten() for _, y in batches])


def test_matrix_scaling_recovers_the_true_probabilities():
    cal, test = miscalibrated(), miscalibrated(2, seed=1)
    ms = MatrixScaling().fit(cal)
    z, _ = test[0]
    true = torch.softmax(torch.einsum("ij,njhw->nihw", W_TRUE, z) + B_TRUE.view(1, 3, 1, 1), 1)
    assert (torch.softmax(ms(z), 1) - true).abs().max() < 0.05
    assert ms.info_["nll_after"] < ms.info_["nll_before"] and not ms.preserves_argmax
    clone = load_calibrator(ms.state_dict())
    assert torch.equal(clone(z), ms(z))


def test_unregularised_fits_equal_scikit_learns_multinomial_logistic_regression():
    linear_model = pytest.importorskip("sklearn.linear_model")
    cal = miscalibrated(4)
    z, y = _pixels(cal)
    for cls in (MatrixScaling, DirichletCalibration):
        ours = cls(off_diagonal=0.0, intercept=0.0).fit(cal)
        features = ours._features(z).double().numpy()
        reference = linear_model.LogisticRegression(penalty=None, tol=1e-10, max_iter=5000).fit(features, y.numpy())
        mine = torch.softmax(ours._features(z) @ ours.weight_.T + ours.bias_, 1).numpy()
        assert np.abs(mine - reference.predict_proba(features)).max() < 2e-4, cls.__name__


def test_sigmoid_dirichlet_is_beta_calibration():
    linear_model = pytest.importorskip("sklearn.linear_model")
    cal = [(x[:, 1:2] - x[:, :1], (y == 1).long()) for x, y in miscalibrated(4)]
    beta = DirichletCalibration(head="sigmoid", off_diagonal=0.0, intercept=0.0).fit(cal)
    assert tuple(beta.weight_.shape) == (1, 2)
    z, y = _pixels(cal)
    features = torch.cat([F.logsigmoid(z), F.logsigmoid(-z)], 1).double().numpy()
    reference = linear_model.LogisticRegression(penalty=None, tol=1e-10, max_iter=5000).fit(features, y.numpy())
    mine = torch.sigmoid(beta(z.view(-1, 1, 1, 1)).flatten()).numpy()
    assert np.abs(mine - reference.predict_proba(features)[:, 1]).max() < 2e-4


def test_regularisation_pulls_towards_per_class_scaling():
    cal = miscalibrated(2)
    free = DirichletCalibration(off_diagonal=0.0, intercept=0.0).fit(cal)
    tied = DirichletCalibration(off_diagonal=100.0, intercept=100.0).fit(cal)
    off = ~torch.eye(3, dtype=torch.bool)
    assert tied.weight_[off].abs().max() < 0.3 * free.weight_[off].abs().max()
    assert tied.bias_.abs().max() < free.bias_.abs().max()
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert odir_penalty(w, torch.tensor([1.0, 3.0]), torch.eye(2, dtype=torch.bool), 2.0, 1.0) == 2 * 6.5 + 5.0


def test_bad_parameters_and_states():
    with pytest.raises(ValueError, match="off_diagonal and intercept must be ≥ 0"):
        DirichletCalibration(off_diagonal=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        MatrixScaling(max_iter=0)
    state = MatrixScaling().fit(miscalibrated(1)).state_dict()
    state["params"]["weight"] = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"weight must be \[3, 3\]"):
        load_calibrator(state)


def _torch_uncertainty_scalers(monkeypatch):
    """torch-uncertainty 0.13's Dirichlet and matrix scalers, loaded without its package ``__init__`` (which
    needs torchvision, not installable here)."""
    spec = importlib.util.find_spec("torch_uncertainty")
    if spec is None:
        pytest.skip("torch-uncertainty is not installed (pip install --no-deps torch-uncertainty)")
    root = Path(spec.origin).parent / "post_processing"

    def load(name: str, path: Path, package: bool = False) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[str(path.parent)]
                                                      if package else None)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    for name in ("torch_uncertainty", "torch_uncertainty.post_processing"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["torch_uncertainty.post_processing"].PostProcessing = load(
        "torch_uncertainty.post_processing.abstract", root / "abstract.py").PostProcessing
    package = "torch_uncertainty.post_processing.calibration"
    pkg = types.ModuleType(package)
    pkg.__path__ = [str(root / "calibration")]
    monkeypatch.setitem(sys.modules, package, pkg)
    for name in ("utils", "scaler", "matrix_scaler", "dirichlet_scaler"):
        load(f"{package}.{name}", root / "calibration" / f"{name}.py")
    modules = sys.modules
    return modules[f"{package}.matrix_scaler"].MatrixScaler, modules[f"{package}.dirichlet_scaler"].DirichletScaler


def test_agrees_with_torch_uncertainty(monkeypatch):
    pytest.importorskip("tqdm")
    matrix_scaler, dirichlet_scaler = _torch_uncertainty_scalers(monkeypatch)
    cal = miscalibrated(2)
    z, y = _pixels(cal)
    loader = [(z, y)]
    eye = torch.eye(3, dtype=torch.bool)
    for ours, theirs, reg in ((MatrixScaling(max_pixels=10**6), matrix_scaler(num_classes=3, max_iter=500), 0.0),
                              (DirichletCalibration(off_diagonal=0.01, intercept=0.01, max_pixels=10**6),
                               dirichlet_scaler(num_classes=3, lambda_reg=0.01, mu_reg=0.01, max_iter=500), 0.01)):
        ours.fit(cal)
        theirs.fit(loader, progress=False)
        with torch.no_grad():
            their_probs = torch.softmax(theirs._scale(z), 1)
        our_probs = torch.softmax(ours(z.T.reshape(1, 3, -1, 1)).reshape(3, -1).T, 1)
        assert (our_probs - their_probs).abs().max() < 5e-3, type(ours).__name__
        # both minimise the same convex objective (on the same pixels): ours is at least as low
        ours_objective = mean_nll(torch.log(our_probs), y) + odir_penalty(ours.weight_, ours.bias_, eye, reg, reg)
        with torch.no_grad():
            theirs_objective = mean_nll(torch.log(their_probs), y) + odir_penalty(
                theirs.inv_temperature_weight, theirs.inv_temperature_bias, eye, reg, reg)
        assert float(ours_objective) <= float(theirs_objective) + 1e-6
