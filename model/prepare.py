"""Prepare a model for encrypted scoring: `python -m model.prepare MODEL_FILE --calibration DATA --out DIR`.

DATA (`.npy`, or `.csv` of numbers with an optional header row) holds samples of the model's input
features, typically its training set. From it each feature gets its declared range (the data's
range, widened by `--margin` of its span on each side: held-out data often reaches past the
training set's extremes), or, with `--feature-range LOW HIGH`, the range every feature is known to
have (pixels, counts), and its own scale, so every feature uses the whole integer grid. Then the
input and weight precisions are chosen together: of the pairs whose plan decrypts exactly
(`bfv.plan.build_plan`), the one of least score error on DATA, where the quantized plan is then
compared with scikit-learn. DIR receives the model file and `model-settings.json` (`model.description`).

An ONNX square network (`MODEL_FILE` ending in `.onnx`: linear layers and squares, `model.onnx_graphs`)
is prepared the same way: its input levels and per-layer weight bits are chosen on DATA
(`model.network_calibration`), and the label agreement of the quantized network with the float one
is printed. `--classes` names its outputs' labels (default 0, 1, ...).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bfv.inputs import MAX_INPUT_BITS, InputEncoding
from bfv.plan import MAX_WEIGHT_BITS, Plan, PlanError, build_plan
from model.description import ModelDescription
from model.loading import LinearModel, ModelLoadError, load_estimator, linear_model_from_estimator, load_served_model
from model.network import NetworkModel, network_outputs
from model.network_calibration import INPUT_BITS, MAX_CALIBRATION_SAMPLES, choose_network_plan
from model.outputs import predict
from model.samples import CalibrationError, read_samples

MIN_BITS = 6
# Breast cancer: 3.5 % of held-out samples pass a 5 % margin, none a 50 % one; 1e-4 of the score either way.
DEFAULT_MARGIN = 0.5


def declared_ranges(samples: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's range over the samples, widened by `margin` of its span (of 1 for a constant)."""
    low, high = samples.min(axis=0), samples.max(axis=0)
    span = np.where(high > low, high - low, np.maximum(np.abs(low), 1.0))
    return low - margin * span, high + margin * span


@dataclass(frozen=True)
class Candidate:
    plan: Plan
    inputs: InputEncoding
    input_bits: int
    weight_bits: int
    max_error: float  # the largest |quantized score - float score| over the samples


def quantized_scores(plan: Plan, encoded: np.ndarray) -> np.ndarray:
    """The scores the encrypted path returns (exact integers over the score scale)."""
    return plan.model.scores(encoded) / plan.public.score_scale


def choose_plan(model: LinearModel, samples: np.ndarray, low: np.ndarray, high: np.ndarray,
                profile: str) -> Candidate:
    """The plan of least score error on `samples` among every precision pair that decrypts exactly."""
    exact = model.scores(samples)
    best: Candidate | None = None
    refusals = []
    for input_bits in range(MIN_BITS, MAX_INPUT_BITS):
        inputs = InputEncoding.from_ranges(low, high, 2 ** input_bits - 1)
        encoded = inputs.encode(samples)
        for weight_bits in range(MIN_BITS, MAX_WEIGHT_BITS + 1):
            try:
                plan = build_plan(model, inputs, profile, weight_bits)
            except PlanError as exc:
                refusals.append(str(exc))
                break  # more weight bits only make the scores larger
            error = float(np.abs(quantized_scores(plan, encoded) - exact).max())
            if best is None or error < best.max_error:
                best = Candidate(plan, inputs, input_bits, weight_bits, error)
    if best is None:
        raise PlanError(f"no precision gives a plan that decrypts exactly: {refusals[0]}")
    return best


def agreement(estimator: object, model: LinearModel, candidate: Candidate, samples: np.ndarray) -> dict:
    """How the quantized plan's answers compare with scikit-learn's own on `samples`."""
    reference = model.scores(samples)
    if model.outputs is not None and model.outputs.kind == "classifier" and hasattr(estimator, "decision_function"):
        sklearn_scores = np.asarray(estimator.decision_function(samples), dtype=np.float64).reshape(reference.shape)
    elif model.outputs is not None and model.outputs.link == "identity":
        sklearn_scores = np.asarray(estimator.predict(samples), dtype=np.float64).reshape(reference.shape)
    else:  # a log link: compare the linear predictor, which the folded weights give exactly
        sklearn_scores = reference
    scores = quantized_scores(candidate.plan, candidate.inputs.encode(samples))
    error = np.abs(scores - sklearn_scores)
    largest = float(np.abs(sklearn_scores).max())
    report = {"samples": int(len(samples)), "max_abs_score_error": float(error.max()),
              "max_rel_score_error": float(error.max() / largest) if largest > 0 else 0.0}
    if model.outputs is not None and model.outputs.kind == "classifier":
        report["label_agreement"] = float(np.mean(predict(scores, model.outputs) == estimator.predict(samples)))
    return report


def _calibration(calibration: Path, features: int, margin: float, feature_range: tuple[float, float] | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples and each feature's declared (low, high)."""
    samples = read_samples(calibration)
    if samples.shape[1] != features:
        raise CalibrationError(f"{calibration} has {samples.shape[1]} features per sample; the model takes "
                               f"{features}")
    if feature_range is None:
        return (samples, *declared_ranges(samples, margin))
    low, high = (np.full(features, float(bound)) for bound in feature_range)
    if not low[0] < high[0]:
        raise CalibrationError(f"--feature-range {feature_range[0]:g} {feature_range[1]:g}: LOW must be below HIGH")
    if (found := InputEncoding.from_ranges(low, high, 1).out_of_range(samples)) is not None:
        raise CalibrationError(f"{calibration}: sample {found[0]}, feature {found[1]} is "
                               f"{samples[found]:g}, outside --feature-range")
    return samples, low, high


def _copied(model_file: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    target = out / model_file.name
    if target.resolve() != model_file.resolve():
        shutil.copyfile(model_file, target)


def prepare_network(model_file: Path, calibration: Path, out: Path, name: str | None = None, version: str = "1",
                    margin: float = DEFAULT_MARGIN, profile: str = "compact",
                    feature_range: tuple[float, float] | None = None, classes: tuple | None = None,
                    progress=None) -> ModelDescription:
    """Prepare an ONNX square network: its input levels and weight bits chosen on the calibration data."""
    served = load_served_model(model_file)
    assert isinstance(served, NetworkModel)
    try:
        outputs = network_outputs(served.network, classes)
    except ValueError as exc:
        raise CalibrationError(f"--classes: {exc}") from None
    samples, low, high = _calibration(calibration, served.n_features, margin, feature_range)
    encodings = [(bits, InputEncoding.from_ranges(low, high, 2 ** bits - 1)) for bits in INPUT_BITS]
    candidate = choose_network_plan(served.network, samples, encodings, profile, progress)
    report = {"samples": int(min(len(samples), MAX_CALIBRATION_SAMPLES)), "label_agreement": candidate.agreement,
              "max_rel_score_error": candidate.max_rel_score_error, "input_bits": candidate.input_bits,
              "weight_bits": list(candidate.weight_bits), "profile": profile,
              "plain_moduli_bits": [t.bit_length() for t in candidate.plan.public.moduli],
              "rounds": len(candidate.plan.public.rounds), "poly_modulus_degree": candidate.plan.public.degree,
              "weighed_features": len(candidate.plan.public.sent_features),
              **({"feature_range": list(feature_range)} if feature_range else {"margin": margin})}
    _copied(model_file, out)
    description = ModelDescription(name=name or model_file.stem, version=version, model_file=model_file.name,
                                   features=served.n_features, outputs=outputs, inputs=candidate.inputs,
                                   weight_bits=candidate.weight_bits, calibration=report)
    description.save(out)
    return description


def prepare(model_file: Path, calibration: Path, out: Path, name: str | None = None, version: str = "1",
            margin: float = DEFAULT_MARGIN, profile: str = "compact",
            feature_range: tuple[float, float] | None = None) -> ModelDescription:
    estimator, pickled_with = load_estimator(model_file)
    model = linear_model_from_estimator(estimator, pickled_with)
    samples, low, high = _calibration(calibration, model.n_features, margin, feature_range)
    candidate = choose_plan(model, samples, low, high, profile)
    report = agreement(estimator, model, candidate, samples)
    report.update(input_bits=candidate.input_bits, weight_bits=candidate.weight_bits,
                  plain_modulus_bits=candidate.plan.public.params.plain_modulus.bit_length(), profile=profile,
                  **({"feature_range": list(feature_range)} if feature_range else {"margin": margin}))
    _copied(model_file, out)
    description = ModelDescription(name=name or model_file.stem, version=version, model_file=model_file.name,
                                   features=model.n_features, outputs=model.outputs, inputs=candidate.inputs,
                                   weight_bits=candidate.weight_bits, calibration=report)
    description.save(out)
    return description


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("model_file", type=Path, help="a pickled scikit-learn linear model or Pipeline, or an ONNX "
                        "square network (.onnx)")
    parser.add_argument("--calibration", type=Path, required=True, help=".npy or .csv of input samples")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the prepared model into")
    parser.add_argument("--name", help="the model's name (default: the file's stem)")
    parser.add_argument("--version", default="1")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="widen each feature's range by this fraction of its span on each side")
    parser.add_argument("--feature-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="every feature's known range (instead of the data's, widened by --margin)")
    parser.add_argument("--profile", choices=["compact", "flooded"], default="compact",
                        help="the v1 parameter profile the service will run (NATIVE_PROFILE)")
    parser.add_argument("--classes", nargs="+", help="an ONNX network's class labels, one per output "
                        "(default 0, 1, ...)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    network = args.model_file.suffix.lower() == ".onnx"
    try:
        if network:
            classes = None if args.classes is None else tuple(int(c) if c.lstrip("-").isdigit() else c
                                                             for c in args.classes)
            description = prepare_network(args.model_file, args.calibration, args.out, args.name, args.version,
                                          args.margin, args.profile, args.feature_range, classes,
                                          progress=lambda line: print(line, flush=True))
        elif args.classes:
            raise CalibrationError("--classes is for ONNX networks: a scikit-learn model names its own classes")
        else:
            description = prepare(args.model_file, args.calibration, args.out, args.name, args.version, args.margin,
                                  args.profile, args.feature_range)
    except (ModelLoadError, CalibrationError, PlanError) as exc:
        print(f"python -m model.prepare: {exc}", file=sys.stderr)
        sys.exit(2)
    report = description.calibration or {}
    if network:
        print(f"SquareNetwork: {description.features} features ({report['weighed_features']} weighed by the first "
              f"layer), {report['rounds']} rounds, {report['input_bits']}-bit inputs, weights of "
              f"{report['weight_bits']} bits per layer, plaintext moduli of {report['plain_moduli_bits']} bits, "
              f"N = {report['poly_modulus_degree']}")
        print(f"on {report['samples']} calibration samples: labels of the quantized network equal to the float "
              f"network's on {report['label_agreement']:.2%}, max |score error| {report['max_rel_score_error']:.2g} "
              "of the largest score")
        print(f"wrote {args.out / description.model_file} and {args.out / 'model-settings.json'} "
              f"in {time.perf_counter() - started:.1f} s")
        return
    print(f"{description.outputs.estimator}: {description.features} features, "
          f"{description.outputs.kind}, {report['input_bits']}-bit inputs, {report['weight_bits']}-bit weights, "
          f"{report['plain_modulus_bits']}-bit plaintext modulus")
    line = (f"on {report['samples']} calibration samples: max |score error| {report['max_abs_score_error']:.3g} "
            f"({report['max_rel_score_error']:.2g} of the largest score)")
    if "label_agreement" in report:
        line += f", labels equal to scikit-learn's on {report['label_agreement']:.2%}"
    print(line)
    print(f"wrote {args.out / description.model_file} and {args.out / 'model-settings.json'} "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
