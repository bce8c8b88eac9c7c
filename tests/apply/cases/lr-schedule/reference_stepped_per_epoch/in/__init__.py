"""The plan's trainer as the plan found it: the reference patient of t2s-opt."""
