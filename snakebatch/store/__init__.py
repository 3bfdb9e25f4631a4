"""The storage layer: everything under OUT and how it is made durable.

`layout` names every path, `durable` writes files that survive a crash, `ledger` commits batches,
`compaction` replaces a complete job's batch parts, `snapshot` swaps in a refresh's generation,
`jobfolder` owns the job's identity and lock; `blobcache` owns the parse cache `--cache DIR`
that jobs share (outside OUT).
Nothing here imports the engine, the executors or the reports.
"""
