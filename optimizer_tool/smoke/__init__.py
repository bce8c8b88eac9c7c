"""``t2s-opt smoke-test``: a short training run under a probe, judged by measured signals.

runner.py starts the trainer (own process group, deadline, clean stop), probe.py records what
happens inside it, checks.py turns the records into pass / fail / n/a rows (checkpoint.py reads a
saved checkpoint back for the EMA check), report.py renders them.
"""
