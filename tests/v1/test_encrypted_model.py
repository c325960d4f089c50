"""`EncryptedModel` and `python -m client predict --input` on a real service (uvicorn, Azurite, real
encryption) serving two models prepared by `python -m model.prepare` on their training splits: a
breast-cancer classifier, `Pipeline([StandardScaler(), LogisticRegression()])`, the default model,
and a diabetes `Ridge` by name; both checked on their held-out splits against scikit-learn itself.

The service keeps its keys in a container of its own, at most MAX_KEYS_PER_IDENTITY=4 per identity
(beyond, the least recently stored key is replaced): a hundred runs on one key file show in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bench.processes import PROJECT_ROOT, TEST_API_KEY, ServiceProcess, running_service
from bfv.encryption import StoredKeyError
from bfv.inputs import InputRangeError
from client import EncryptedModel
from client.scoring import ScoringFailed
from model.prepare import prepare

MAX_KEYS = 4
CLASSIFIER, REGRESSOR = "breast-cancer", "diabetes"
# The held-out breast-cancer split reaches 38 % of a feature's training span beyond its training range:
# the models are prepared with ranges wide enough for the data they will score.
MARGIN = 0.5


@dataclass
class Prepared:
    estimator: object
    X_test: np.ndarray
    y_test: np.ndarray
    model_file: Path


def _prepare(root: Path, work: Path, name: str, estimator: object, X: np.ndarray, y: np.ndarray,
             stratify: bool) -> Prepared:
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0,
                                                        stratify=y if stratify else None)
    estimator.fit(X_train, y_train)
    model_file = work / f"{name}.pkl"
    joblib.dump(estimator, model_file)
    np.save(work / f"{name}-train.npy", X_train)
    prepare(model_file, work / f"{name}-train.npy", root / name / "1", name=name, margin=MARGIN)
    return Prepared(estimator, X_test, y_test, model_file)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Prepared]]:
    """Both models fitted, pickled and prepared into <root>/<name>/1/."""
    root, work = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("training")
    pipeline = Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression(max_iter=1000))])
    return root, {CLASSIFIER: _prepare(root, work, CLASSIFIER, pipeline, *load_breast_cancer(return_X_y=True),
                                       stratify=True),
                  REGRESSOR: _prepare(root, work, REGRESSOR, Ridge(alpha=0.1), *load_diabetes(return_X_y=True),
                                      stratify=False)}


@pytest.fixture(scope="module")
def classifier(models) -> Prepared:  # noqa: ANN001
    return models[1][CLASSIFIER]


@pytest.fixture(scope="module")
def regressor(models) -> Prepared:  # noqa: ANN001
    return models[1][REGRESSOR]


@pytest.fixture(scope="module")
def served(models, azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:  # noqa: ANN001
    env = {"AZUREML_MODEL_DIR": str(models[0]), "MODEL_NAME": CLASSIFIER, "AZURE_STORAGE_CONNECTION_STRING": azurite,
           "WORKER_COUNT": "1", "KEY_CONTAINER": "encrypted-model-keys", "MAX_KEYS_PER_IDENTITY": str(MAX_KEYS)}
    with running_service(env, tmp_path_factory.mktemp("service") / "service.log") as process:
        yield process


@pytest.fixture(scope="module")
def classifier_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys") / "breast-cancer.key"


def stored_key_ids(served: ServiceProcess) -> set[str]:
    """Every key the test identity stores, all models."""
    return {key["key_id"] for key in served.http.get("/v1/keys").json()["keys"]}


def sklearn_error(call, X) -> str:  # noqa: ANN001 - a scikit-learn method
    with pytest.raises(ValueError) as raised:
        call(X)
    return str(raised.value)


def test_a_classifier_answers_as_its_scikit_learn_pipeline(classifier: Prepared, served: ServiceProcess,
                                                          classifier_key: Path) -> None:
    pipeline, X = classifier.estimator, classifier.X_test
    with EncryptedModel(served.url, TEST_API_KEY, key_file=classifier_key, batch_size=64) as model:
        assert model.n_features_in_ == pipeline.n_features_in_ == 30
        np.testing.assert_array_equal(model.classes_, pipeline.classes_)
        assert model.classes_.dtype == pipeline.classes_.dtype
        assert (model.model_name, model.model_version) == (CLASSIFIER, "1")
        labels = model.predict(X)
        scores = model.decision_function(X)
        proba = model.predict_proba(X)
        assert model.traffic.requests == 3 * 3  # 143 samples in batches of 64, three times
        model.batch_size = 1  # one /v1/score request each: the same exact integer scores
        np.testing.assert_array_equal(model.decision_function(X[:5]), scores[:5])
    assert labels.dtype == pipeline.predict(X).dtype and labels.shape == (len(X),)
    assert np.mean(labels == pipeline.predict(X)) >= 0.995
    expected = pipeline.decision_function(X)
    assert scores.shape == expected.shape == (len(X),)
    assert np.abs(scores - expected).max() <= 1e-3 * np.abs(expected).max()
    assert proba.shape == (len(X), 2) and np.abs(proba - pipeline.predict_proba(X)).max() <= 1e-3
    assert model.key_file == classifier_key
    # The same model by name and version: its own routes, the same exact scores.
    with EncryptedModel(served.url, TEST_API_KEY, CLASSIFIER, "1", key_file=classifier_key.with_name("v1.key"),
                        batch_size=256) as named:
        assert named._scoring.routes.score == f"/v1/models/{CLASSIFIER}/versions/1/score"  # noqa: SLF001
        np.testing.assert_array_equal(named.decision_function(X), scores)
        # The keys of /v1 are the default model's, breast-cancer/1: both pairs are stored for it.
        assert {key["key_id"] for key in named.stored_keys()} == {model.key_id, named.key_id}
    with pytest.raises(ScoringFailed, match="GET /v1/models/no-such-model answered 404"):
        EncryptedModel(served.url, TEST_API_KEY, "no-such-model", key_file=classifier_key.with_name("none.key"))


def test_input_is_checked_as_scikit_learn_checks_it_and_against_the_declared_ranges(
        classifier: Prepared, served: ServiceProcess, classifier_key: Path) -> None:
    pipeline, X = classifier.estimator, classifier.X_test[:4]
    model = EncryptedModel(served.url, TEST_API_KEY, key_file=classifier_key)
    logistic = pipeline[-1]  # scikit-learn's infinity check, as the final step words it
    cases = {
        "1-D": (X[0], sklearn_error(pipeline.predict, X[0])),
        "features": (X[:, :29], sklearn_error(pipeline.predict, X[:, :29]).replace("StandardScaler", "EncryptedModel")),
        "NaN": (np.where(np.arange(30) == 4, np.nan, X), None),
        "infinity": (np.where(np.arange(30) == 4, np.inf, X), sklearn_error(logistic.predict, np.full((1, 30), np.inf))),
    }
    for name, (bad, message) in cases.items():
        for method in (model.predict, model.decision_function, model.predict_proba):
            with pytest.raises(ValueError) as raised:
                method(bad)
            if message is not None:
                assert str(raised.value) == message, name
    assert cases["1-D"][1].startswith("Expected 2D array, got 1D array instead:\narray=[")
    assert cases["1-D"][1].endswith("Reshape your data either using array.reshape(-1, 1) if your data has a single "
                                    "feature or array.reshape(1, -1) if it contains a single sample.")
    assert cases["features"][1] == "X has 29 features, but EncryptedModel is expecting 30 features as input."
    assert cases["infinity"][1] == "Input X contains infinity or a value too large for dtype('float64')."
    with pytest.raises(ValueError, match=r"^Input X contains NaN\.\n"):
        model.predict(cases["NaN"][0])

    low, high = model.plan.inputs.low, model.plan.inputs.high
    outside = X[:2].copy()
    outside[1, 7] = high[7] + (high[7] - low[7])
    with pytest.raises(InputRangeError) as raised:
        model.predict(outside)
    assert str(raised.value).startswith(f"sample 1, feature 7: {outside[1, 7]:g} is outside the range "
                                        f"[{low[7]:g}, {high[7]:g}]")
    assert model.traffic.requests == 0  # nothing refused was encrypted or sent
    model.close()

    with EncryptedModel(served.url, TEST_API_KEY, key_file=classifier_key, clip=True) as clipping:
        assert clipping.key_id == model.key_id
        clipped = clipping.decision_function(outside)
    expected = pipeline.decision_function(np.clip(outside, low, high))
    assert np.abs(clipped - expected).max() <= 1e-3 * np.abs(expected).max()


def test_a_bad_key_file_is_refused_before_any_key_is_sent(served: ServiceProcess, classifier_key: Path,
                                                           tmp_path: Path) -> None:
    stored = json.loads(classifier_key.read_text())  # made by the tests above
    with EncryptedModel(served.url, TEST_API_KEY, key_file=tmp_path / "fresh.key") as fresh:
        fresh_public_key = json.loads(fresh.key_file.read_text())["public_key"]
    before = stored_key_ids(served)
    other = tmp_path / "other-parameters.key"
    other.write_text(json.dumps({**stored, "parameters": {**stored["parameters"], "plain_modulus": 65537}}))
    with pytest.raises(StoredKeyError, match="holds a key pair for other parameters"):
        EncryptedModel(served.url, TEST_API_KEY, key_file=other)
    mismatched = tmp_path / "mismatched.key"
    mismatched.write_text(json.dumps({**stored, "public_key": fresh_public_key}))
    with pytest.raises(StoredKeyError, match="does not belong to the stored secret key"):
        EncryptedModel(served.url, TEST_API_KEY, key_file=mismatched)
    with pytest.raises(ScoringFailed, match="answered 401"):
        EncryptedModel(served.url, None, key_file=classifier_key)
    assert stored_key_ids(served) == before


def test_the_default_key_file_is_in_the_user_s_cache(served: ServiceProcess, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with EncryptedModel(served.url, TEST_API_KEY) as first, EncryptedModel(served.url + "/", TEST_API_KEY) as second:
        assert first.key_file == second.key_file and first.key_id == second.key_id
    assert first.key_file.parent == tmp_path / "encrypted-scoring"
    assert (first.key_file.stat().st_mode & 0o777, first.key_file.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert json.loads(first.key_file.read_text())["key_id"] == first.key_id


def _cli(served: ServiceProcess, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCORING_API_KEY": TEST_API_KEY, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "client", "predict", "--url", served.url, *args], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_command_line_scores_csv_and_npy_input_and_compares_with_the_pickle(
        classifier: Prepared, regressor: Prepared, served: ServiceProcess, tmp_path: Path) -> None:
    X, expected = classifier.X_test, classifier.estimator.predict(classifier.X_test)
    csv = tmp_path / "samples.csv"
    np.savetxt(csv, X, delimiter=",", header=",".join(f"f{j}" for j in range(30)), comments="")
    np.save(tmp_path / "samples.npy", X)
    runs = {"csv": (csv, "predictions.csv", ["--batch", "1"]),
            "npy": (tmp_path / "samples.npy", "predictions.npy", ["--batch", "64"])}
    for name, (source, out, options) in runs.items():
        result = _cli(served, tmp_path, "--input", str(source), "--compare-with", str(classifier.model_file),
                      "--predictions-out", str(tmp_path / out), "--json", *options)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert (report["n"], report["kind"], report["model"]) == (len(X), "classifier", CLASSIFIER), report
        assert report["agreement_with_plaintext_model"] >= 0.995 and report["max_rel_score_error"] <= 1e-3, report
        assert report["key_file"].startswith(str(tmp_path / "cache"))
        written = np.load(tmp_path / out) if out.endswith(".npy") else np.loadtxt(tmp_path / out, dtype=int)
        assert written.tolist() == report["predictions"] and np.mean(written == expected) >= 0.995, name
    assert len(list((tmp_path / "cache" / "encrypted-scoring").iterdir())) == 1  # both runs used one kept key

    np.save(tmp_path / "diabetes.npy", regressor.X_test)
    result = _cli(served, tmp_path, "--input", str(tmp_path / "diabetes.npy"), "--model", REGRESSOR, "--batch", "256",
                  "--compare-with", str(regressor.model_file), "--predictions-out", str(tmp_path / "d.csv"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["kind"], report["agreement_with_plaintext_model"]) == ("regressor", None)
    assert report["max_rel_score_error"] <= 1e-3, report
    reference = regressor.estimator.predict(regressor.X_test)
    assert np.abs(np.loadtxt(tmp_path / "d.csv") - reference).max() <= 1e-3 * np.abs(reference).max()

    outside = X[:3].copy()
    outside[2, 5] = -1e6
    np.save(tmp_path / "outside.npy", outside)
    refused = _cli(served, tmp_path, "--input", str(tmp_path / "outside.npy"))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"python -m client predict: --input {tmp_path / 'outside.npy'}: sample 2, "
                                     "feature 5: -1e+06 is outside the range [") and "(pass --clip" in refused.stderr


def test_the_demo_refuses_a_service_that_serves_no_mnist_classifier(served: ServiceProcess) -> None:
    result = subprocess.run([sys.executable, "-m", "client", "demo", "--url", served.url, "--api-key", TEST_API_KEY],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("python -m client demo: the service serves Pipeline(StandardScaler, LogisticRegression), "
                             "a classifier of 30 features, not an MNIST classifier of 784 pixels; the demo scores "
                             "MNIST images (use python -m client predict --input for this model)\n")


def test_a_regressor_predicts_floats_and_has_no_predict_proba(regressor: Prepared, served: ServiceProcess,
                                                              tmp_path: Path) -> None:
    ridge, X = regressor.estimator, regressor.X_test
    with EncryptedModel(served.url, TEST_API_KEY, REGRESSOR, key_file=tmp_path / "ridge.key",
                        batch_size=256) as model:
        predictions = model.predict(X)
        assert model.score(X, regressor.y_test) == pytest.approx(ridge.score(X, regressor.y_test), abs=1e-4)
        for attribute in ("predict_proba", "decision_function", "classes_"):
            with pytest.raises(AttributeError) as ours:
                getattr(model, attribute)
            with pytest.raises(AttributeError) as theirs:
                getattr(ridge, attribute)
            assert str(ours.value) == str(theirs.value) == f"'Ridge' object has no attribute '{attribute}'"
            assert not hasattr(model, attribute)
    expected = ridge.predict(X)
    assert predictions.dtype == np.float64 and predictions.shape == expected.shape == (len(X),)
    assert np.abs(predictions - expected).max() <= 1e-3 * np.abs(expected).max()


def test_a_hundred_runs_use_one_key_of_the_quota(regressor: Prepared, served: ServiceProcess, tmp_path: Path) -> None:
    for key in served.http.get("/v1/keys").json()["keys"]:  # the identity starts with none
        deleted = served.http.delete(f"/v1/models/{key['model']}/versions/{key['version']}/keys/{key['key_id']}")
        assert deleted.status_code == 204, deleted.text

    def run(key_file: Path) -> str:
        with EncryptedModel(served.url, TEST_API_KEY, REGRESSOR, key_file=key_file) as model:
            return model.key_id

    earlier = run(tmp_path / "earlier.key")
    kept = {run(tmp_path / "kept.key") for _ in range(100)}
    assert len(kept) == 1
    assert stored_key_ids(served) == {earlier, *kept}  # a hundred runs, one key: the earlier one was not replaced
    # The quota is real: two more keys fill it, and one more replaces the least recently stored, the earlier key.
    fresh = {run(tmp_path / f"fresh-{number}.key") for number in range(MAX_KEYS - 1)}
    assert stored_key_ids(served) == {*kept, *fresh}
    X = regressor.X_test[:3]
    with EncryptedModel(served.url, TEST_API_KEY, REGRESSOR, key_file=tmp_path / "kept.key") as model:
        expected = regressor.estimator.predict(X)
        assert np.abs(model.predict(X) - expected).max() <= 1e-3 * np.abs(expected).max()
