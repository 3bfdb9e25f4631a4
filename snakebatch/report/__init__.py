"""Reports on a job without running it: `status` (what is in OUT) and `plan` (what a run would cost)."""
