"""Writes output lines that hold every other kind of line break and control character, each
trying to forge a log line of its own in the text log."""

import sys

FORGED = "2026-01-01T00:00:00.000Z ERROR forged"
for separator in ["\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
                  "\u2029", "\x1b[2K\r", "\x00", "\x7f", "\x9b"]:
    sys.stdout.write(f"ok{separator}{FORGED}\n")
sys.stderr.write(f"warned\r{FORGED}\n")
