"""Constant-velocity Kalman filter with a Rauch-Tung-Striebel smoother, for camera paths.

Both camera stages smooth a short, finished series offline (a clip's camera path, a clip's measured
trajectory), so they want the smoother, not only the filter: a forward Kalman filter alone lags
behind every change of speed, the backward RTS pass removes that lag. OpenCV's ``cv2.KalmanFilter``
is the forward filter only, one series and one step per Python call; filterpy has the smoother but is
not a dependency and has had no release since 2018. The model is two lines of linear algebra, so it
lives here, vectorised over many series at once (they share the model, hence the covariances and
gains, which do not depend on the data).
"""

import numpy as np
from numpy.typing import NDArray

Series = NDArray[np.float64]

_F = np.array([[1.0, 1.0], [0.0, 1.0]])
"""State transition for (position, velocity) with one frame per step."""


def smooth_constant_velocity(series: Series, smoothing: float) -> Series:
    """Series ``(n,)`` or ``(n, m)`` smoothed along axis 0 by a constant-velocity Kalman/RTS smoother.

    ``smoothing`` is the ratio of measurement noise to process noise (acceleration) variance: 0 returns
    the input unchanged, larger values follow the data less and straight lines more. A straight line
    (constant velocity) passes through unchanged (to about 1e-6), whatever the smoothing.
    """
    values = np.asarray(series, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ValueError(f"series must be (n,) or (n, m), got shape {values.shape}")
    if not np.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
    if not np.all(np.isfinite(values)):
        raise ValueError("series must be finite")
    n = values.shape[0]
    if smoothing == 0 or n < 3:
        return values.copy()
    columns = values.reshape(n, -1)

    # 1. Noise model: unit measurement variance, process noise as white acceleration (dt = 1).
    measurement_var = 1.0
    accel_var = measurement_var / smoothing
    q = accel_var * np.array([[0.25, 0.5], [0.5, 1.0]])

    # 2. Forward filter. Start at the first value with an unknown velocity.
    state = np.stack([columns[0], np.zeros_like(columns[0])], axis=-1)  # (m, 2)
    cov = np.diag([measurement_var, 1e6 * (measurement_var + accel_var)])
    filtered = np.empty((n, *state.shape))
    predicted = np.empty_like(filtered)
    filtered_cov = np.empty((n, 2, 2))
    predicted_cov = np.empty((n, 2, 2))
    filtered[0], predicted[0] = state, state
    filtered_cov[0], predicted_cov[0] = cov, cov
    for k in range(1, n):
        state_pred = state @ _F.T
        cov_pred = _F @ cov @ _F.T + q
        gain = cov_pred[:, 0] / (cov_pred[0, 0] + measurement_var)
        state = state_pred + np.outer(columns[k] - state_pred[:, 0], gain)
        cov = cov_pred - np.outer(gain, cov_pred[0, :])
        predicted[k], predicted_cov[k] = state_pred, cov_pred
        filtered[k], filtered_cov[k] = state, cov

    # 3. Backward RTS pass: correct each filtered state with what the later frames saw.
    smoothed = filtered.copy()
    for k in range(n - 2, -1, -1):
        back_gain = filtered_cov[k] @ _F.T @ np.linalg.inv(predicted_cov[k + 1])
        smoothed[k] = filtered[k] + (smoothed[k + 1] - predicted[k + 1]) @ back_gain.T
    result: Series = smoothed[:, :, 0].reshape(values.shape)
    return result
