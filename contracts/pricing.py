"""The price of a job in points, exactly as the product shows it."""


def price_points(duration: int, fps: int) -> int:
    """Return ``8 + 4*duration + max(0, (fps - 8) // 4)`` points."""
    return 8 + 4 * duration + max(0, (fps - 8) // 4)
