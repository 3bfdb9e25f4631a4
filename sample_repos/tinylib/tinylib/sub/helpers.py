# helpers: small numeric functions
import math
import functools


def clamp(x, lo=0, hi=1):
    return max(lo, min(hi, x))


@functools.lru_cache(maxsize=None)
def scale(x, factor):
    # a comment inside
    return x * factor


def _private():

    return math.pi
