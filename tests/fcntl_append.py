#!/usr/bin/python3
"""Appends stdin to the mailbox argv[1] as an fcntl-locking MDA does:
open O_WRONLY|O_APPEND (never create), lockf(F_LOCK) the whole file,
write, fsync, unlock.  Used by tests/test_mailsafety*.py after
"dotlockfile -l" (Debian Policy 11.6: fcntl and a dotlock)."""

import fcntl
import os
import sys


def main():
	data = sys.stdin.buffer.read()
	fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
	fcntl.lockf(fd, fcntl.LOCK_EX)
	view = memoryview(data)
	while view:
		n = os.write(fd, view)
		view = view[n:]
	os.fsync(fd)
	fcntl.lockf(fd, fcntl.LOCK_UN)
	os.close(fd)
	return 0


if __name__ == "__main__":
	sys.exit(main())
