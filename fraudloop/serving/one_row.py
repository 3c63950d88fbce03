"""One row through LightGBM's prepared single-row entry point instead of ``Booster.predict``.

``Booster.predict`` builds a predictor object, deep-copies its parameters and inspects its input
on every call: for the one row of a single request that was 26 us against 7 us this way (a
one-off micro-measure; `bench/serve.py` prints `Booster.predict`'s one-row floor, p50 ~21 us, and
the scoring path that uses this), and the model call was a fifth of the event loop's time at the
service's peak in a one-off py-spy profile. LightGBM's C API prepares the same prediction once
per model (``LGBM_BoosterPredictForMatSingleRowFastInit``: the predict type, iterations, column
count and parameters) and then scores a row with one call: the same trees and arithmetic, so
the same score to the bit (`tests/test_serving_one_row.py` compares them).

The prepared config holds buffers a call writes to, so one caller at a time: a second thread
(the off-path worker scoring a control row while the event loop scores) does not wait, it takes
``Booster.predict``.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

_NORMAL = 0  # C_API_PREDICT_NORMAL: probabilities for a binary objective, as Booster.predict
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


class OneRowPredictor:
    def __init__(self, booster: Any, n_features: int):
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._booster = booster  # the config points into it: keep it alive as long
        self._lib = _LIB
        self.n_features = n_features
        self._config = ctypes.c_void_p()
        iterations = booster.best_iteration  # what Booster.predict uses by default
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(iterations if iterations > 0 else -1),
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(n_features),
                _c_str("num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        self._safe_call = _safe_call
        self._predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._lock = threading.Lock()

    def predict(self, matrix: np.ndarray) -> np.ndarray | None:
        """The score of ``matrix``'s one row as ``Booster.predict`` gives it; None when another
        thread is using the config (the caller then takes ``Booster.predict``)."""
        row = np.ascontiguousarray(matrix, dtype=np.float64)
        if row.shape != (1, self.n_features):
            raise ValueError(f"one row of {self.n_features} features expected, got {row.shape}")
        if not self._lock.acquire(blocking=False):
            return None
        try:
            out = np.empty(1, dtype=np.float64)
            length = ctypes.c_int64(0)
            self._safe_call(
                self._predict(
                    self._config,
                    row.ctypes.data_as(ctypes.c_void_p),
                    ctypes.byref(length),
                    out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                )
            )
        finally:
            self._lock.release()
        return out

    def __del__(self) -> None:
        config, self._config = getattr(self, "_config", None), None
        if config:
            self._lib.LGBM_FastConfigFree(config)


def one_row_predictor(booster: Any, n_features: int) -> OneRowPredictor | None:
    """The prepared call of a LightGBM booster; None for any other model (a test's stand-in),
    which then answers through its own ``predict``."""
    import lightgbm as lgb

    return OneRowPredictor(booster, n_features) if isinstance(booster, lgb.Booster) else None
