from .ema import EMA

__all__ = ["EMA"]
