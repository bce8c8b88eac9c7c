"""``t2s-opt ablate``: what each optimization buys, measured.

For every key an arm is made with ``t2s-opt apply --only KEY --out ARM/trainer``, plus the
unchanged trainer (baseline) and all keys together; each arm trains every seed on the same data
with the same step budget, and its last checkpoint is scored by ``t2s.eval``. One concern a module:

- ``claims``: what OPTIMIZATION_PLAN.md promises per key (data, keyed by key string);
- ``arms``: which arms, and making each one's patched copy (or saying why it was not applied);
- ``job``: the process that trains and evaluates one arm and seed, inside the arm's copy;
- ``runner``: settings, resuming, and launching the jobs;
- ``statistics``: effect = arm - baseline per seed, mean and t-interval over seeds;
- ``report``: the table, the JSON and the bar chart.

Nothing here imports torch: the jobs do, in their own processes.
"""
