"""What trainers and their libraries mean, as analysis of the index: roles of objects, training
structure, configured values, diffusion schedules and objectives, EMA and LR-schedule facts.
No editing here, and no import of the rule contract or of any rule module."""
