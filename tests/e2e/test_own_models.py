"""Your own model, right or refused: models trained on scikit-learn's bundled datasets, prepared with
`python -m model.prepare` on their training split, served together by one service (Azurite, real
HTTP), and scored on their held-out split through `EncryptedModel`, the CLI and the tutorial's
client, against scikit-learn itself; models that are not affine are refused at start, by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.svm import LinearSVR

from bench.processes import PROJECT_ROOT, TEST_API_KEY, ServiceProcess, running_service
from bfv.inputs import InputRangeError
from client import EncryptedModel
from model.onnx_graphs import network_graph
from model.prepare import prepare, prepare_network
from model.square_training import TrainingSettings, train_square_mlp
from tests.real_parts import missing_part

DEFAULT = "breast-cancer"
NETWORK = "digits-square"
LABELS = 0.995  # labels equal to scikit-learn's on at least this share of held-out samples
SCORES = 1e-3  # max |score error| <= SCORES * max |score| on them
PROBA = 1e-3


@dataclass(frozen=True)
class Trained:
    estimator: object
    X_test: np.ndarray
    classifier: bool


def _split(loader, target: str | None = None) -> tuple[np.ndarray, ...]:
    X, y = loader(return_X_y=True)
    if target == "names":
        y = np.asarray(load_iris().target_names)[y]
    if target == "two":  # a multi-output regression: the target and a second one derived from it
        y = np.stack([y, y * 0.5 + X[:, 2] * 100], axis=1)
    return train_test_split(X, y, random_state=0, test_size=0.25)


def _models() -> dict[str, tuple[object, tuple, tuple | None]]:
    """name -> (estimator, its data loader and target, a known range of every feature or None)."""
    return {
        DEFAULT: (make_pipeline(StandardScaler(), LogisticRegression()), (load_breast_cancer, None), None),
        "iris": (LogisticRegression(max_iter=1000), (load_iris, "names"), None),
        "diabetes-ridge": (Ridge(), (load_diabetes, None), None),
        "diabetes-linear": (LinearRegression(), (load_diabetes, None), None),
        "digits-sgd": (make_pipeline(StandardScaler(), SGDClassifier(random_state=0)), (load_digits, None), (0, 16)),
        "breast-cancer-pca": (make_pipeline(StandardScaler(), PCA(8, random_state=0), LogisticRegression()),
                              (load_breast_cancer, None), None),
        "diabetes-two-targets": (Ridge(), (load_diabetes, "two"), None),
        "diabetes-svr": (make_pipeline(StandardScaler(), LinearSVR(random_state=0, max_iter=10000)),
                         (load_diabetes, None), None),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Trained]]:
    """Every model fitted, pickled and prepared into <root>/<name>/1/."""
    root, work = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("training")
    models = {}
    for name, (estimator, (loader, target), feature_range) in _models().items():
        X_train, X_test, y_train, _ = _split(loader, target)
        estimator.fit(X_train, y_train)
        joblib.dump(estimator, work / f"{name}.pkl")
        np.save(work / f"{name}.npy", X_train)
        prepare(work / f"{name}.pkl", work / f"{name}.npy", root / name / "1", name=name,
                feature_range=feature_range)
        models[name] = Trained(estimator, X_test, hasattr(estimator, "classes_"))
    # A square network of another spelling (MatMul, Add, Pow) on 8x8 digits, prepared from ONNX.
    X_train, X_test, y_train, _ = _split(load_digits)
    network = train_square_mlp(X_train / 16.0, y_train, TrainingSettings(hidden=32, epochs=30, max_shift=0))
    (work / f"{NETWORK}.onnx").write_bytes(network_graph(network, "matmul").SerializeToString())
    np.save(work / f"{NETWORK}.npy", X_train / 16.0)
    prepare_network(work / f"{NETWORK}.onnx", work / f"{NETWORK}.npy", root / NETWORK / "1", name=NETWORK,
                    feature_range=(0.0, 1.0))
    models[NETWORK] = Trained(network, X_test / 16.0, True)
    # A second version of one model: its name alone serves the latest.
    X_train, _, y_train, _ = _split(load_iris, "names")
    joblib.dump(LogisticRegression(C=0.05, max_iter=1000).fit(X_train, y_train), work / "iris-2.pkl")
    prepare(work / "iris-2.pkl", work / "iris.npy", root / "iris" / "2", name="iris", version="2")
    return root, models


@pytest.fixture(scope="module")
def served(trained, azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root, _ = trained
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite, "AZUREML_MODEL_DIR": str(root), "MODEL_NAME": DEFAULT,
           "WORKER_COUNT": "1", "MAX_KEYS_PER_IDENTITY": "4",
           # its own container: the identity's keys (and which of them MAX_KEYS_PER_IDENTITY replaces) are this
           # module's only, whatever other modules stored in the session's Azurite before
           "KEY_CONTAINER": "own-models-keys"}
    with running_service(env, tmp_path_factory.mktemp("served") / "service.log") as service:
        yield service


def _sklearn_scores(estimator: object, X: np.ndarray) -> np.ndarray:
    """The linear scores: decision_function, else the (identity-link) prediction."""
    method = getattr(estimator, "decision_function", None) or estimator.predict
    return np.asarray(method(X), dtype=np.float64)


@pytest.mark.parametrize("name", list(_models()))
def test_each_model_scores_as_scikit_learn_on_held_out_data(name: str, trained, served: ServiceProcess,
                                                            tmp_path: Path) -> None:
    _, models = trained
    model = models[name]
    with EncryptedModel(served.url, api_key=TEST_API_KEY, model=name, version="1",
                        key_file=tmp_path / "key") as encrypted:
        assert encrypted.n_features_in_ == model.X_test.shape[1]
        predictions = encrypted.predict(model.X_test)
        expected = model.estimator.predict(model.X_test)
        if model.classifier:
            assert list(encrypted.classes_) == list(model.estimator.classes_)
            assert np.mean(predictions == expected) >= LABELS
            scores, reference = encrypted.decision_function(model.X_test), _sklearn_scores(model.estimator,
                                                                                            model.X_test)
        else:
            assert predictions.dtype == np.float64 and predictions.shape == expected.shape
            scores, reference = predictions, expected
        assert np.abs(scores - reference).max() <= SCORES * np.abs(reference).max()
        if hasattr(model.estimator, "predict_proba"):
            assert np.abs(encrypted.predict_proba(model.X_test) - model.estimator.predict_proba(model.X_test)).max() \
                <= PROBA
        else:  # the same error as scikit-learn's, word for word
            with pytest.raises(AttributeError) as theirs:
                model.estimator.predict_proba(model.X_test)
            with pytest.raises(AttributeError) as ours:
                encrypted.predict_proba(model.X_test)
            assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name", list(_models()))
def test_bad_samples_raise_with_the_reason(name: str, trained, served: ServiceProcess, tmp_path: Path) -> None:
    _, models = trained
    X = models[name].X_test
    features, last = X.shape[1], X.shape[1] - 1
    with EncryptedModel(served.url, api_key=TEST_API_KEY, model=name, version="1",
                        key_file=tmp_path / "key") as encrypted:
        with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
            encrypted.predict(X[0])
        with pytest.raises(ValueError, match=f"X has {features - 1} features, but EncryptedModel is expecting "
                                             f"{features} features"):
            encrypted.predict(X[:2, :-1])
        for bad, reason in ((np.nan, "contains NaN"), (np.inf, "contains infinity")):
            sample = X[:1].copy()
            sample[0, last] = bad
            with pytest.raises(ValueError, match=reason):
                encrypted.predict(sample)
        far = X[:1].copy()
        far[0, last] = 1e6
        with pytest.raises(InputRangeError, match=f"feature {last}"):
            encrypted.predict(far)
        encrypted.clip = True
        assert len(encrypted.predict(far)) == 1


def test_two_models_answer_with_their_own_plans_and_a_key_of_one_is_refused_by_the_other(
        served: ServiceProcess, tmp_path: Path) -> None:
    listing = served.http.get("/v1/models").json()["models"]
    assert {model["name"] for model in listing} == set(_models()) | {NETWORK}
    assert [(model["name"], model["version"]) for model in listing] == sorted(
        [(name, "1") for name in [*_models(), NETWORK]] + [("iris", "2")])
    assert served.http.get("/v1/models/iris").json()["version"] == "2"  # a name alone: its latest version
    assert served.http.get("/v1/models/iris/versions/1").json()["version"] == "1"
    assert [model["name"] for model in listing if model["default"]] == [DEFAULT]
    default, iris = served.http.get("/v1/model").json(), served.http.get("/v1/models/iris").json()
    assert default["name"] == DEFAULT and default["n_features"] == 30
    assert iris["n_features"] == 4 and iris["outputs"]["classes"] == ["setosa", "versicolor", "virginica"]
    with EncryptedModel(served.url, api_key=TEST_API_KEY, model=DEFAULT, key_file=tmp_path / "key") as encrypted:
        request = encrypted._scoring._keys.encrypt_single(np.zeros(30, dtype=np.int64))  # noqa: SLF001 - a raw body
    # A single request of this profile has the same size for every model: only the key tells them apart.
    answer = served.http.post("/v1/models/iris/score", content=request,
                              headers={"content-type": "application/octet-stream"})
    assert answer.status_code == 404 and "for this identity and model iris/2" in answer.json()["message"]


def test_the_tutorials_client_scores_the_default_model_on_score(trained, served: ServiceProcess,
                                                                azurite: str) -> None:
    from client.azureml import AzureMLSession

    _, models = trained
    model = models[DEFAULT]
    with AzureMLSession(url=served.url, conn_str=azurite, container="own-model-keys", api_key=TEST_API_KEY) as session:
        scores = np.array([session.scores(sample)[0] for sample in model.X_test[:5]])
    reference = model.estimator.decision_function(model.X_test[:5])
    assert np.abs(scores - reference).max() <= 1e-4 * np.abs(reference).max()  # CKKS, not quantized


def test_the_javascript_client_scores_the_default_model_from_its_features(trained, served: ServiceProcess) -> None:
    """web/scoring-client.js in Node: features encoded with the declared offsets and scales, one request
    each and in one batch, equal to the quantized model's exact scores."""
    if shutil.which("node") is None:
        missing_part("Node.js is not installed")
    _, models = trained
    model = models[DEFAULT]
    X = model.X_test[:4]
    with EncryptedModel(served.url, api_key=TEST_API_KEY) as encrypted:
        exact = encrypted.decision_function(X)  # the Python client's decryption of the same exact scores
    for batch_size in (1, 4):
        done = subprocess.run(["node", str(PROJECT_ROOT / "tests" / "js" / "predict.mjs")], capture_output=True,
                              text=True, timeout=300, input=json.dumps({"url": served.url, "api_key": TEST_API_KEY,
                                                                        "features": X.tolist(),
                                                                        "batch_size": batch_size}))
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert np.array(result["scores"]).ravel().tolist() == exact.tolist()
        assert result["labels"] == model.estimator.predict(X).tolist()


def test_a_hundred_cli_runs_of_one_identity_reuse_one_key(trained, served: ServiceProcess, tmp_path: Path) -> None:
    """MAX_KEYS_PER_IDENTITY=4: a client making a key per run would replace keys; one keeping it renews one."""
    from typer.testing import CliRunner

    from client.__main__ import app

    _, models = trained
    np.save(tmp_path / "three.npy", models["iris"].X_test[:3])
    env = {"SCORING_API_KEY": TEST_API_KEY, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runner = CliRunner()
    for _ in range(100):
        result = runner.invoke(app, ["predict", "--url", served.url, "--input", str(tmp_path / "three.npy"),
                                     "--model", "iris", "--version", "1", "--json"], env=env)
        assert result.exit_code == 0, result.output
    assert json.loads(result.output)["predictions"] == list(models["iris"].estimator.predict(models["iris"].X_test[:3]))
    keys = served.http.get("/v1/models/iris/versions/1/keys").json()["keys"]
    assert len(keys) == 1


def test_a_prepared_onnx_network_scores_exactly_as_its_quantized_network_and_as_onnxruntime(
        trained, served: ServiceProcess, tmp_path: Path) -> None:
    """The network's encrypted labels over the CLI, one sample per two-round request, against onnxruntime
    on the ONNX file itself and, exactly, against the quantized network the service plans."""
    import onnxruntime

    from bfv.network_plan import build_network_plan
    from model.description import ModelDescription

    root, models = trained
    X = models[NETWORK].X_test[:60]
    np.save(tmp_path / "digits.npy", X)
    onnx_file = root / NETWORK / "1" / f"{NETWORK}.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "client", "predict", "--url", served.url, "--model", NETWORK, "--input",
         str(tmp_path / "digits.npy"), "--json", "--compare-with", str(onnx_file)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "SCORING_API_KEY": TEST_API_KEY, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input": X.astype(np.float32)})[0].argmax(axis=1)
    assert np.mean(np.array(report["predictions"]) == reference) >= 0.95
    description = ModelDescription.load(root / NETWORK / "1")
    plan = build_network_plan(models[NETWORK].estimator, description.inputs, "compact", description.weight_bits)
    quantized = np.asarray(plan.quantized_scores(X)).argmax(axis=1)
    assert report["predictions"] == quantized.tolist()


def test_the_cli_compares_with_the_pickled_model(trained, served: ServiceProcess, tmp_path: Path) -> None:
    root, models = trained
    X = models["diabetes-ridge"].X_test
    np.savetxt(tmp_path / "held-out.csv", X, delimiter=",", header=",".join(f"f{i}" for i in range(X.shape[1])),
               comments="")
    result = subprocess.run(
        [sys.executable, "-m", "client", "predict", "--url", served.url, "--input", str(tmp_path / "held-out.csv"),
         "--model", "diabetes-ridge", "--compare-with", str(root / "diabetes-ridge" / "1" / "diabetes-ridge.pkl"),
         "--predictions-out", str(tmp_path / "predictions.npy"), "--json"],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
        env={**os.environ, "SCORING_API_KEY": TEST_API_KEY, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    reference = models["diabetes-ridge"].estimator.predict(X)
    assert np.abs(np.load(tmp_path / "predictions.npy") - reference).max() <= SCORES * np.abs(reference).max()
    assert report["max_abs_score_error"] <= SCORES * np.abs(reference).max()


@pytest.mark.parametrize("estimator, named", [
    (RandomForestClassifier(n_estimators=2, random_state=0), "RandomForestClassifier"),
    (make_pipeline(PolynomialFeatures(), LogisticRegression()), "PolynomialFeatures"),
])
def test_a_model_that_is_not_affine_is_refused_at_start_by_name(estimator, named: str, tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    _refused_at_start(tmp_path, estimator.fit(X, y), "refused", named)


def test_a_model_folder_whose_name_cannot_stand_in_a_url_is_refused_at_start(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    _refused_at_start(tmp_path, LogisticRegression(max_iter=1000).fit(X, y), "iris model", "is not usable in a URL")


def _refused_at_start(tmp_path: Path, estimator: object, folder_name: str, named: str) -> None:
    folder = tmp_path / folder_name / "1"
    folder.mkdir(parents=True)
    joblib.dump(estimator, folder / "sklearn_mnist_model.pkl")
    result = subprocess.run([sys.executable, "-m", "service"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "AZUREML_MODEL_DIR": str(tmp_path), "PORT": "1",
                                              "API_KEYS": "a=b"})
    assert result.returncode == 2 and named in result.stderr, result.stderr
