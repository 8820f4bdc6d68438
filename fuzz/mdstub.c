/*
 * mdstub.c: the accessors of struct maildrop (maildrop.h) for the targets
 * that replace the maildrop with a stub (fuzz_proto.c, fuzz_plain.c),
 * which #include this file after mdint.h and common.h; they define
 * md_open, md_close and the rest themselves.  Each checks that pop3d.c
 * names a message the stub has (maildrop.c's, the real ones, trust it).
 */

struct maildrop *
md_new(void)
{
	struct maildrop	*md = calloc(1, sizeof(*md));

	FZ_CHECK(md != NULL, "md_new: out of memory");
	md->fd = -1;
	return md;
}

uint32_t
md_count(const struct maildrop *md)
{
	return md->n;
}

/* md_new() never fails here: the protocol frees what it got. */
void
md_free(struct maildrop *md)
{
	FZ_CHECK(md != NULL, "md_free(NULL)");
	md_close(md);
	free(md);
}

uint64_t
md_size(const struct maildrop *md, uint32_t i)
{
	FZ_CHECK(i < md->n, "md_size(%u) of %u", i, md->n);
	return md->msg[i].size;
}

void
md_dele(struct maildrop *md, uint32_t i)
{
	FZ_CHECK(i < md->n && !md->msg[i].deleted, "md_dele(%u) of %u", i,
	    md->n);
	md->msg[i].deleted = 1;
}

void
md_undele(struct maildrop *md, uint32_t i)
{
	FZ_CHECK(i < md->n, "md_undele(%u) of %u", i, md->n);
	md->msg[i].deleted = 0;
}

int
md_is_deleted(const struct maildrop *md, uint32_t i)
{
	FZ_CHECK(i < md->n, "md_is_deleted(%u) of %u", i, md->n);
	return md->msg[i].deleted;
}
