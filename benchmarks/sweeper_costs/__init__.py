"""What the expiry sweeper costs, on SQLite, PostgreSQL and MariaDB: four questions, answered with figures.

The sweeper (``kvstore/sweeper.py``) samples K = 20 rows at a random point of the ``store_sweep_slot``
index and purges the dead ones. This benchmark checks the claims that design rests on.

Section 1, sampling cost vs table size. The table is bulk-loaded as PUTs would leave it: half the
rows with an expiry (far in the future, so all live) and a random 62-bit ``sweep_slot``, half
persistent (slot NULL). At ``--rows``/10 and then ``--rows`` rows (the rest loaded into the same
table) it times 500 ``node.sample_expiring(20)`` calls and 500 ``node.purge`` calls on 20 live keys
(nothing is deleted: this is the cost of the DELETE's re-check), one call at a time, after 50 untimed
warm-up calls. The claim: O(log n + K), so the cost at 1M rows is within ±50 % of the cost at 100k.
It also shows each engine's plan for the sampling query and, on MariaDB, the InnoDB buffer-pool
misses per call (a table larger than the engine's cache costs disk reads whatever the algorithm).

Section 2, sampling bias. 10,000 rows with an expiry, all live; 20,000 ``sample_expiring(20)`` calls
(400,000 draws, 40 expected per key). The scheme returns the K rows after a uniformly random point,
so a row is returned when the point falls in the window between its K-th predecessor's slot and its
own: its chance is proportional to that window (a sum of K gaps), not uniform. Reported: spread of
the per-key counts, keys never sampled, a chi-square statistic against uniform and against that gap
model (computed from the slots the benchmark assigned), then the same after every row is given a
fresh slot, and the counts of both runs summed.

Section 3, index cost on PUT throughput. On the table section 1 left (``--rows`` rows), unconditional
PUTs through ``node.put`` with a TTL (which maintain the index) and without (persistent),
on fresh keys (inserts) and on existing keys of the same kind (overwrites); 16 concurrent tasks,
20,000 ops or 15 s per case, with the ``store_sweep_slot`` index and with it dropped. Each case runs
as two half legs in the order with, without, without, with, so that drift (a growing table, cache
warm-up, checkpoints, vacuum) falls on both sides alike; the legs are pooled.

Section 4, reclaim rate and foreground impact. 200,000 rows, 100,000 of them already expired and
100,000 live with an expiry; 16 tasks doing ``node.get`` on random live keys for 10 s without the
sweeper (5 s before and 5 s after, so that drift cancels out) and for 10 s in between with a
``ShardSweeper`` (default ``SweeperSettings``) running in the same event loop, sharing the node's pool
as it does in the server; then the sweeper alone for 5 s. Reported: GET ops/s and p50/p99 with and
without, and the rows the sweeper deleted per second under load and alone (dead rows counted with SQL
before and after; cycles and batches from kvstore's sweeper metrics).

PostgreSQL and MariaDB are temporary servers on free ports (``kvstore.cluster``), SQLite a temporary
file; all are removed at the end. ``--no-durable`` turns fsync off on the servers; SQLite always runs
with kvstore's own ``synchronous=FULL``. After each bulk load the servers' statistics are refreshed
(``ANALYZE``), as autovacuum / InnoDB would do on their own.

Run from the repository root (the whole default run takes 3 to 5 minutes on 2 cores)::

    .venv/bin/python -m benchmarks.sweeper_costs [--rows 1000000] [--backends sqlite,postgres,mysql]
        [--durable/--no-durable] [--json OUT]
"""
