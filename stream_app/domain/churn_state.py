"""The churn model and its metrics as plain data: numbers, strings, lists and dicts.

A snapshot is rebuilt from data alone, so reading one can never run code (a pickle
can). Only the linear model has such a form: `export_model` raises `NotExportable`
for any other pipeline. The state saved is exactly what learning reads and writes,
so a rebuilt model predicts, and goes on learning, as the original would:

* ``StandardScaler``: per feature the count, running mean and running variance;
* ``LogisticRegression``: weights, intercept, L2 penalty, gradient clip, intercept
  learning rate; its plain ``SGD`` optimizer: the step and the number of steps taken.

`ProgressiveMetrics` keeps river's Rust-backed parts (``RollingROCAUC``'s window,
``ADWIN``'s buckets) as the bytes their own ``__getstate__`` returns, decoded again by
their ``__setstate__`` in Rust: data, never Python objects.

>>> from stream_app.domain.churn import make_model
>>> model = make_model("logreg")
>>> model.learn_one({"recency_days": 100.0}, 1)
>>> copy = import_model(export_model(model))
>>> x = {"recency_days": 50.0}
>>> copy.predict_proba_one(x) == model.predict_proba_one(x)
True
"""

from __future__ import annotations

import base64
import collections
import math
from typing import Any

from river import compose, linear_model, optim, preprocessing, utils

from stream_app.domain.churn import ProgressiveMetrics

__all__ = [
    "FORMAT",
    "InvalidState",
    "NotExportable",
    "export_model",
    "export_progress",
    "import_model",
    "import_progress",
]

#: Version of the layout below; a snapshot of another layout is not read.
FORMAT = "churn-state-v1"


class NotExportable(TypeError):
    """The model has no plain-data form (a tree or forest): it cannot be stored as data."""


class InvalidState(ValueError):
    """A stored state is not of the expected layout or holds an unusable number."""


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidState(f"{what} is {value!r}, not a finite number")
    return float(value)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidState(f"{what} is {value!r}, not a count")
    return value


def _numbers(raw: Any, what: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise InvalidState(f"{what} is not an object")
    return {str(k): _num(v, f"{what}[{k!r}]") for k, v in raw.items()}


def _bytes(raw: Any, what: str) -> bytes:
    if not isinstance(raw, str):
        raise InvalidState(f"{what} is not base64 text")
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise InvalidState(f"{what} is not base64 text") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def export_model(model: Any) -> dict[str, Any]:
    """The state of a ``StandardScaler | LogisticRegression(SGD)`` pipeline as plain data."""
    steps = list(model.steps.values()) if isinstance(model, compose.Pipeline) else []
    if len(steps) != 2 or not (
        type(steps[0]) is preprocessing.StandardScaler
        and type(steps[1]) is linear_model.LogisticRegression
    ):
        raise NotExportable(f"{model!r} is not a scaler and a logistic regression")
    scaler, logreg = steps
    opt = logreg.optimizer
    if (
        scaler.window_size is not None
        or type(opt) is not optim.SGD
        or type(opt.lr) is not optim.schedulers.Constant
        or type(logreg.intercept_lr) is not optim.schedulers.Constant
        or type(logreg.loss) is not optim.losses.Log
        or logreg.l1
        or type(logreg.initializer) is not optim.initializers.Zeros
    ):
        raise NotExportable("only plain SGD with constant steps, log loss and L2 is exported")
    return {
        "format": FORMAT,
        "scaler": {
            "with_std": bool(scaler.with_std),
            "counts": dict(scaler.counts),
            "means": dict(scaler.means),
            "vars": dict(scaler.vars),
        },
        "logreg": {
            "weights": logreg._weights.to_dict(),
            "intercept": logreg.intercept,
            "intercept_init": logreg.intercept_init,
            "intercept_lr": logreg.intercept_lr.learning_rate,
            "l2": logreg.l2,
            "clip_gradient": logreg.clip_gradient,
            "loss": {"weight_pos": logreg.loss.weight_pos, "weight_neg": logreg.loss.weight_neg},
            "optimizer": {
                "name": "sgd",
                "lr": opt.lr.learning_rate,
                "n_iterations": opt.n_iterations,
            },
        },
    }


def import_model(state: Any) -> compose.Pipeline:
    """Rebuild the pipeline `export_model` described; `InvalidState` if it is not one."""
    try:
        if state.get("format") != FORMAT:
            raise InvalidState(f"churn model state is not {FORMAT}")
        sc, lr, opt = state["scaler"], state["logreg"], state["logreg"]["optimizer"]
        if opt.get("name") != "sgd":
            raise InvalidState(f"optimizer {opt.get('name')!r} is not sgd")
        scaler = preprocessing.StandardScaler(with_std=bool(sc["with_std"]))
        counts = sc["counts"]
        if not isinstance(counts, dict):
            raise InvalidState("scaler.counts is not an object")
        scaler.counts = collections.Counter(
            {str(k): _count(v, f"scaler.counts[{k!r}]") for k, v in counts.items()}
        )
        scaler.means = collections.defaultdict(float, _numbers(sc["means"], "scaler.means"))
        scaler.vars = collections.defaultdict(float, _numbers(sc["vars"], "scaler.vars"))
        loss = lr["loss"]
        logreg = linear_model.LogisticRegression(
            optimizer=optim.SGD(_num(opt["lr"], "optimizer.lr")),
            loss=optim.losses.Log(
                weight_pos=_num(loss["weight_pos"], "loss.weight_pos"),
                weight_neg=_num(loss["weight_neg"], "loss.weight_neg"),
            ),
            l2=_num(lr["l2"], "logreg.l2"),
            intercept_init=_num(lr["intercept_init"], "logreg.intercept_init"),
            intercept_lr=_num(lr["intercept_lr"], "logreg.intercept_lr"),
            clip_gradient=_num(lr["clip_gradient"], "logreg.clip_gradient"),
        )
        logreg.intercept = _num(lr["intercept"], "logreg.intercept")
        logreg._weights = utils.VectorDict(_numbers(lr["weights"], "logreg.weights"))
        logreg.optimizer.n_iterations = _count(opt["n_iterations"], "optimizer.n_iterations")
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidState(f"churn model state lacks or mistypes {exc}") from None
    return compose.Pipeline(scaler, logreg)


def _confusion(cm: Any) -> dict[str, Any]:
    return {
        "cells": [
            [bool(t), bool(p), float(w)] for t, row in cm.data.items() for p, w in row.items()
        ],
        "n_samples": cm.n_samples,
        "tp": cm._total_true_positives,
    }


def _set_confusion(cm: Any, raw: Any, what: str) -> None:
    cells = raw["cells"]
    if not isinstance(cells, list):
        raise InvalidState(f"{what}.cells is not a list")
    for cell in cells:
        if not (isinstance(cell, list) and len(cell) == 3):
            raise InvalidState(f"{what}.cells holds {cell!r}")
        t, p, w = bool(cell[0]), bool(cell[1]), _num(cell[2], f"{what} weight")
        cm._update(t, p, w)
    cm.n_samples = _count(raw["n_samples"], f"{what}.n_samples")
    cm._total_true_positives = _num(raw["tp"], f"{what}.tp")


def export_progress(progress: ProgressiveMetrics) -> dict[str, Any]:
    """The state of `ProgressiveMetrics` as plain data (Rust parts as base64 of their bytes)."""
    rolling = progress.rolling_auc
    rolling.get()  # moves river's Python-side buffer into the Rust window
    adwin = progress.detector
    return {
        "format": FORMAT,
        "window": progress.window,
        "n": progress.n,
        "positives": progress.positives,
        "drifts": progress.drifts,
        "last_drift": progress.last_drift,
        "bin_n": list(progress.bin_n),
        "bin_p": list(progress.bin_p),
        "bin_y": list(progress.bin_y),
        "auc": {
            "n_thresholds": progress.auc.n_thresholds,
            "cms": [_confusion(cm) for cm in progress.auc.cms],
        },
        "rolling_auc": _b64(rolling._metric.__getstate__()),
        "log_loss": {"n": progress.log_loss._mean.n, "mean": progress.log_loss._mean._mean},
        "detector": {
            "params": [adwin.delta, adwin.clock, adwin.max_buckets, adwin.min_window_length,
                       adwin.grace_period],
            "drift_detected": adwin.drift_detected,
            "helper": _b64(adwin._helper.__getstate__()),
        },
    }


def import_progress(state: Any) -> ProgressiveMetrics:
    """Rebuild `ProgressiveMetrics` from `export_progress`'s data; `InvalidState` if unusable."""
    try:
        if state.get("format") != FORMAT:
            raise InvalidState(f"churn metrics state is not {FORMAT}")
        m = ProgressiveMetrics(window=_count(state["window"], "window"))
        m.n = _count(state["n"], "n")
        m.positives = _count(state["positives"], "positives")
        m.drifts = _count(state["drifts"], "drifts")
        last = state["last_drift"]
        m.last_drift = None if last is None else _count(last, "last_drift")
        for name in ("bin_n", "bin_p", "bin_y"):
            values = [_num(v, name) for v in state[name]]
            if len(values) != len(getattr(m, name)):
                raise InvalidState(f"{name} has {len(values)} bins")
            setattr(m, name, values)
        auc = state["auc"]
        if auc["n_thresholds"] != m.auc.n_thresholds or len(auc["cms"]) != len(m.auc.cms):
            raise InvalidState("auc thresholds differ")
        for i, (cm, raw) in enumerate(zip(m.auc.cms, auc["cms"], strict=True)):
            _set_confusion(cm, raw, f"auc.cms[{i}]")
        m.rolling_auc._metric.__setstate__(_bytes(state["rolling_auc"], "rolling_auc"))
        m.log_loss._mean.n = _num(state["log_loss"]["n"], "log_loss.n")
        m.log_loss._mean._mean = _num(state["log_loss"]["mean"], "log_loss.mean")
        det = state["detector"]
        params = det["params"]
        if params != [m.detector.delta, m.detector.clock, m.detector.max_buckets,
                      m.detector.min_window_length, m.detector.grace_period]:
            raise InvalidState(f"detector parameters {params!r} differ")
        m.detector._helper.__setstate__(_bytes(det["helper"], "detector.helper"))
        m.detector._drift_detected = bool(det["drift_detected"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidState(f"churn metrics state lacks or mistypes {exc}") from None
    except ValueError as exc:
        raise InvalidState(f"churn metrics state: {exc}") from None
    except BaseException as exc:  # a Rust panic on bytes it cannot decode
        if type(exc).__name__ != "PanicException":
            raise
        raise InvalidState(f"churn metrics state: undecodable bytes ({exc})") from None
    return m
