"""The churn model and its metrics stored as data: a loaded copy behaves exactly as the original."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from typing import Any

import orjson
import pytest

from stream_app.domain import churn, churn_state
from stream_app.store import churn_models

KEY = b"k" * 32


def _examples(n: int, seed: int) -> list[tuple[dict[str, float], int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = {name: rng.gauss(0.0, 3.0) for name in churn.FEATURE_NAMES}
        if rng.random() < 0.1:  # a feature seen for the first time after the snapshot
            x[f"late_{rng.randrange(3)}"] = rng.random()
        out.append((x, int(rng.random() < 0.3 + 0.05 * x["recency_days"])))
    return out


def _trained(n: int = 2_000) -> tuple[Any, churn.ProgressiveMetrics]:
    model, progress = churn.make_model("logreg"), churn.ProgressiveMetrics()
    for x, y in _examples(n, seed=1):
        progress.update(y, churn.churn_probability(model, x))
        model.learn_one(x, y)
    return model, progress


def _round_trip(model: Any, progress: churn.ProgressiveMetrics) -> tuple[Any, Any]:
    m = churn_state.import_model(orjson.loads(orjson.dumps(churn_state.export_model(model))))
    p = churn_state.import_progress(orjson.loads(orjson.dumps(
        churn_state.export_progress(progress))))
    return m, p


def test_loaded_model_predicts_and_learns_as_the_original() -> None:
    model, progress = _trained()
    copy, copy_progress = _round_trip(model, progress)
    for x, y in _examples(5_000, seed=2):
        a, b = churn.churn_probability(model, x), churn.churn_probability(copy, x)
        assert b == pytest.approx(a, abs=1e-12, rel=0)
        progress.update(y, a)
        copy_progress.update(y, b)
        model.learn_one(x, y)
        copy.learn_one(x, y)
    scaler, logreg = model.steps.values()
    c_scaler, c_logreg = copy.steps.values()
    assert c_logreg.weights == pytest.approx(logreg.weights, abs=1e-12, rel=0)
    assert c_logreg.intercept == pytest.approx(logreg.intercept, abs=1e-12, rel=0)
    assert c_logreg.optimizer.n_iterations == logreg.optimizer.n_iterations
    assert dict(c_scaler.counts) == dict(scaler.counts)
    assert c_scaler.vars == pytest.approx(scaler.vars, abs=1e-12, rel=0)
    assert copy_progress.summary() == progress.summary()
    assert progress.summary()["n"] == 7_000


def test_tree_models_have_no_data_form() -> None:
    with pytest.raises(churn_state.NotExportable):
        churn_state.export_model(churn.make_model("hoeffding"))


@pytest.mark.parametrize("damage", [
    lambda s: s["logreg"].__setitem__("weights", {"a": "__import__('os')"}),
    lambda s: s["logreg"]["optimizer"].__setitem__("name", "adam"),
    lambda s: s["scaler"].__setitem__("counts", {"a": -1}),
    lambda s: s.pop("logreg"),
    lambda s: s.__setitem__("format", "pickle"),
])
def test_a_damaged_model_state_is_refused(damage: Any) -> None:
    state = orjson.loads(orjson.dumps(churn_state.export_model(_trained(50)[0])))
    damage(state)
    with pytest.raises(churn_state.InvalidState):
        churn_state.import_model(state)


def test_undecodable_metric_bytes_are_refused() -> None:
    state = orjson.loads(orjson.dumps(churn_state.export_progress(_trained(50)[1])))
    state["detector"]["helper"] = "AAAA"
    with pytest.raises(churn_state.InvalidState):
        churn_state.import_progress(state)


class _Boom:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


def _forged(fields: dict[str, bytes]) -> dict[str, bytes]:
    """A snapshot whose model is a code-running pickle with a matching sha256."""
    blob = pickle.dumps(_Boom())
    forged = {**fields, "format": b"pickle", "model": blob}
    forged["sha256"] = hashlib.sha256(blob + b"\0" + forged["progress"]).hexdigest().encode()
    return forged


@pytest.mark.parametrize("key", [None, KEY])
def test_a_forged_pickle_is_never_unpickled(key: bytes | None, monkeypatch: Any) -> None:
    model, progress = _trained(50)
    fields = churn_models.encode(model, progress, "logreg", 3, 10, 50, key)
    assert churn_models.decode(fields, key).version == 3
    monkeypatch.setattr(pickle, "loads", lambda *_a, **_k: pytest.fail("unpickled"))
    with pytest.raises(churn_models.SnapshotRefused, match="v3"):
        churn_models.decode(_forged(fields), key)
    # The pre-data layout (a pickle and its sha256, no format) is refused as well.
    old = {k: v for k, v in _forged(fields).items() if k not in ("format", "mac")}
    with pytest.raises(churn_models.SnapshotRefused, match="older release"):
        churn_models.decode(old, key)


def test_signed_snapshots_check_every_field() -> None:
    model, progress = _trained(50)
    fields = churn_models.encode(model, progress, "logreg", 3, 10, 50, KEY)
    with pytest.raises(churn_models.SnapshotRefused, match="signature"):
        churn_models.decode({**fields, "offset": b"999"}, KEY)
    with pytest.raises(churn_models.SnapshotRefused, match="signature"):
        churn_models.decode(fields, b"another key of 32 bytes.........")
    unsigned = churn_models.encode(model, progress, "logreg", 3, 10, 50)
    with pytest.raises(churn_models.SnapshotRefused, match="signature"):
        churn_models.decode(unsigned, KEY)


def test_tree_models_are_never_stored_and_a_signed_pickle_is_never_unpickled(
    monkeypatch: Any,
) -> None:
    model = churn.make_model("hoeffding")
    model.learn_one({"a": 1.0}, 1)
    for key in (None, KEY):
        with pytest.raises(churn_state.NotExportable, match="no data form"):
            churn_models.encode(model, churn.ProgressiveMetrics(), "hoeffding", 1, 0, 1, key)
    # A pickle signed with the right key (a leaked key) is still refused, unread.
    fields = churn_models.encode(*_trained(50), "logreg", 3, 10, 50, KEY)
    signed = _forged(fields)
    signed["mac"] = churn_models._mac(KEY, signed).encode()
    monkeypatch.setattr(pickle, "loads", lambda *_a, **_k: pytest.fail("unpickled"))
    with pytest.raises(churn_models.SnapshotRefused, match="never unpickled"):
        churn_models.decode(signed, KEY)
