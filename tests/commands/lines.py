"""Awkward output: blank lines, a line too long, bad UTF-8, CRLF, a progress line out of range,
no newline at the end."""

import sys

out = sys.stdout.buffer
out.write(b"\n   \n")
out.write(b"long " + b"x" * 100_000 + b"\n")
out.write(b"after the long line\n")
out.write(b"bad \xff\xfe utf-8\n")
out.write(b"windows line\r\n")
out.write(b"progress: 9/3\n")
out.write(b"progress: 2/4\n")
out.write(b"  indented")
out.flush()
