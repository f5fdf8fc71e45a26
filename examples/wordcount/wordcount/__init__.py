"""An example package of threadsvc jobs (docs/jobs.md of threadsvc walks through it)."""
