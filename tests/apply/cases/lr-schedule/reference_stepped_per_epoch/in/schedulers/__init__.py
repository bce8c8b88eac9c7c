from .ddim import BETA_SCHEDULES, PREDICTION_TYPES, DDIMScheduler, DDIMSchedulerOutput

__all__ = ["BETA_SCHEDULES", "PREDICTION_TYPES", "DDIMScheduler", "DDIMSchedulerOutput"]
