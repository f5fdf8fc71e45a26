"""Three steps, each a line and a progress line on stdout; one line on stderr; exit 0."""

import sys

TOTAL = 3
print(f"progress: 0/{TOTAL}", flush=True)
for step in range(1, TOTAL + 1):
    print(f"step {step}", flush=True)
    print(f"progress: {step}/{TOTAL}", flush=True)
print("careful: almost done", file=sys.stderr, flush=True)
print("done")
