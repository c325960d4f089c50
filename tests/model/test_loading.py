"""The model loader accepts any fitted linear model, old pickles included, and refuses the rest clearly."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeClassifier
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from model.outputs import labels_from_scores
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import ModelLoadError, load_linear_model
from tests.expectations import bundled_model_accuracy_floor

RNG = np.random.default_rng(7)
X = RNG.random((60, 12))
Y_MULTI = RNG.integers(0, 3, 60)
Y_BINARY = (X[:, 0] > 0.5).astype(int)


def _dump(estimator: object, path: Path) -> Path:
    joblib.dump(estimator, path)
    return path


def _pickle_as_if_written_by(estimator: object, version: str) -> bytes:
    """Pickle `estimator` with the version stamp an older scikit-learn would have written."""

    class OldVersionPickler(pickle.Pickler):
        def reducer_override(self, obj: object) -> object:
            if obj is estimator:
                reduced = list(obj.__reduce_ex__(2))
                state = dict(reduced[2])
                state["_sklearn_version"] = version
                reduced[2] = state
                return tuple(reduced)
            return NotImplemented

    buffer = io.BytesIO()
    OldVersionPickler(buffer, protocol=4).dump(estimator)
    return buffer.getvalue()


def test_bundled_model_is_a_ten_class_mnist_classifier() -> None:
    model = load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)
    assert model.coef.shape == (10, 784)
    assert model.intercept.shape == (10,)
    assert list(model.classes) == list(range(10))


def test_bundled_model_accuracy_on_the_evaluation_images(bundled_estimator, mnist_test_images) -> None:
    images, labels, source = mnist_test_images
    accuracy = bundled_estimator.score(images / 255.0, labels)
    assert accuracy >= bundled_model_accuracy_floor(source), (accuracy, source)


@pytest.mark.parametrize("estimator, y, outputs", [
    (LogisticRegression(max_iter=500), Y_MULTI, 3),
    (LogisticRegression(max_iter=500), Y_BINARY, 1),
    (LinearSVC(), Y_MULTI, 3),
    (RidgeClassifier(), Y_MULTI, 3),
    (LinearRegression(), X @ np.arange(12), 1),
    (LinearRegression(fit_intercept=False), X @ np.arange(12), 1),
])
def test_linear_models_load_and_score_like_sklearn(tmp_path: Path, estimator, y, outputs) -> None:
    estimator.fit(X, y)
    model = load_linear_model(_dump(estimator, tmp_path / "m.pkl"))
    assert model.coef.shape == (outputs, 12)
    expected = estimator.decision_function(X) if hasattr(estimator, "decision_function") else estimator.predict(X)
    np.testing.assert_allclose(model.scores(X).reshape(expected.shape), expected, rtol=1e-9, atol=1e-9)
    if hasattr(estimator, "classes_"):
        assert list(labels_from_scores(model.scores(X).reshape(len(X), -1), model.classes)) == list(estimator.predict(X))


def test_old_pickle_loads_with_one_clear_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    estimator = LogisticRegression(max_iter=500).fit(X, Y_MULTI)
    path = tmp_path / "old.pkl"
    path.write_bytes(_pickle_as_if_written_by(estimator, "0.22.1"))
    with caplog.at_level(logging.WARNING, logger="model.loading"):
        model = load_linear_model(path)
    np.testing.assert_array_equal(model.coef, estimator.coef_)
    assert model.pickled_with == "0.22.1"
    lines = [r.getMessage() for r in caplog.records if r.name == "model.loading"]
    assert len(lines) == 1 and "0.22.1" in lines[0] and "old.pkl" in lines[0]


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "not found"),
    (lambda p: (p.write_bytes(b"not a pickle"), p)[1], "cannot unpickle"),
    (lambda p: _dump(DecisionTreeClassifier().fit(X, Y_MULTI), p), "no coef_"),
    (lambda p: _dump(LogisticRegression(), p), "no coef_"),
])
def test_unusable_model_files_fail_with_a_clear_message(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path / "bad.pkl")
    with pytest.raises(ModelLoadError, match=message):
        load_linear_model(path)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    estimator = LogisticRegression(max_iter=500).fit(X, Y_MULTI)
    estimator.coef_[0, 0] = np.nan
    with pytest.raises(ModelLoadError, match="NaN"):
        load_linear_model(_dump(estimator, tmp_path / "nan.pkl"))


def test_seed_tutorial_pickle_loads(seed_model_dir: Path) -> None:
    model = load_linear_model(seed_model_dir / DEFAULT_MODEL_FILE)
    assert model.coef.shape == (10, 784) and model.pickled_with == "0.22.1"  # the tutorial's pickle (its README)


def test_one_vs_one_classifiers_are_refused_and_logistic_regression_cv_is_served() -> None:
    """SVC(kernel="linear") votes between pairs of classes: its coef_ rows are not class scores, even when
    there are as many pairs as classes (3). LogisticRegressionCV follows LogisticRegression's rules."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.svm import SVC

    from model.loading import linear_model_from_estimator
    from model.outputs import predict_proba

    X, y = load_iris(return_X_y=True)
    with pytest.raises(ModelLoadError, match="SVC votes one-vs-one between 3 classes"):
        linear_model_from_estimator(SVC(kernel="linear").fit(X, y))
    binary = SVC(kernel="linear").fit(X, y > 0)
    assert (labels_from_scores(linear_model_from_estimator(binary).scores(X), binary.classes_) == binary.predict(X)).all()
    cv = LogisticRegressionCV(max_iter=1000).fit(X, y)
    model = linear_model_from_estimator(cv)
    np.testing.assert_allclose(predict_proba(model.scores(X), model.outputs), cv.predict_proba(X), rtol=0, atol=1e-12)
