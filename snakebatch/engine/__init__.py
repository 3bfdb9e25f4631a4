"""The engine: one job's run, from discovery to commit.

`discovery` walks SOURCE, `batching` cuts the stream into batches, `governor` keeps the tree
under the memory budget, `coordinator` runs the loop, `worker` is the pure function of a batch,
`sinks` and `refresh` hand finished batches to the store, `tally` counts them, `watchdog` stops a
worker stuck on one file. The engine uses the store and the executors; neither uses it.
"""
