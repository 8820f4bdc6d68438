"""Mail the tests share (without From_ lines: conftest's mbox() adds them).

  M1, M2, M3, THREE     three small messages: headers, a body, and in M3
                        lines that need byte-stuffing ("." and "..")
  message(i, tag)       a message with Message-ID <TAG.I@safety.test>
  numbered(n, tag)      message(1, tag) ... message(n, tag)
  FOUR                  numbered(4)

A file's odd messages (a 10 MB line, a From_ line in a body, a corpus of
its own) stay in that file.
"""

M1 = b"From: bob@example.org\nSubject: one\n\nFirst.\n"
M2 = b"Subject: two\n\nline 1\nline 2\n"
M3 = b"Subject: three\n\n.\n..two dots\ndone.\n"
THREE = [M1, M2, M3]


def message(i, tag="m", body=None, extra_hdr=b""):
	"""A message (no From_ line) with Message-ID <TAG.I@safety.test>."""
	if body is None:
		body = b"Body of %s %d.\n.a line with a leading dot\n" % (
		    tag.encode(), i)
	return (b"From: sender%d@example.org\nTo: alice@example.org\n"
	    b"Subject: %s %d\nMessage-ID: <%s.%d@safety.test>\n%s\n" % (
	    i, tag.encode(), i, tag.encode(), i, extra_hdr)) + body


def numbered(n, tag="m"):
	"""message(1, tag) ... message(n, tag)."""
	return [message(i, tag) for i in range(1, n + 1)]


FOUR = numbered(4)
