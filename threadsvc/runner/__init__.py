"""Running jobs as threads: the registry of jobs, the context they report through, the runner."""
