/*
 * fuzz_passwd.c: libFuzzer target for the password-file reader of auth.c:
 * pw_check(), pw_getline(), pw_parse().
 *
 * Input: the password file.  crypt_rn() is replaced (common.c) by a fast
 * stand-in under which the password "secret" matches any hash.  For
 * "alice" and the names of the first lines, pw_check() must agree with an
 * independent reading of the rules (auth.c, pop3d.8): lines of at most
 * AUTH_LINE_MAX octets without NUL; '#' comments and blank lines; fields
 * user:hash[:uid:gid[:mailbox]] (the mailbox takes the rest of the line);
 * a user name of 1..POP3_USER_MAX octets 0x21..0x7e without '/' or ':',
 * not starting with '.' or '-'; a hash of 1..AUTH_HASH_MAX octets; uid
 * and gid decimal digits below 2^32 - 1; an absolute mailbox path shorter
 * than PATH_MAX; the first valid line of a name counts.
 */
#include "../auth.c"

#include "common.h"

struct pop_opts opt;

#include "logstub.c"

/* The protocol side is never reached from here. */
void
pop_conn_init(struct pop_conn *c, int in, int out)
{
	(void)c;
	(void)in;
	(void)out;
	abort();
}

time_t
pop_clock(void)
{
	abort();
}

int
pop_authorize(struct pop_conn *c, struct pop_cred *cred, int greet)
{
	(void)c;
	(void)cred;
	(void)greet;
	abort();
}

int
pop_auth_failed(struct pop_conn *c, const struct pop_cred *cred)
{
	(void)c;
	(void)cred;
	abort();
}

/* The PROXY header (proxy.c) is fuzz_proxy's. */
int
proxy_trusted(const void *sa, size_t len)
{
	(void)sa;
	(void)len;
	abort();
}

int
proxy_read(struct pop_conn *c, struct proxy_addr *pa, const char *peer)
{
	(void)c;
	(void)pa;
	(void)peer;
	abort();
}

int
proxy_peer(const struct proxy_addr *pa, size_t n, char *peer, size_t size)
{
	(void)pa;
	(void)n;
	(void)peer;
	(void)size;
	abort();
}

int
pop_transaction(struct pop_conn *c, const struct pop_user *u)
{
	(void)c;
	(void)u;
	abort();
}

int
pop_flush(struct pop_conn *c)
{
	(void)c;
	abort();
}

/* The sandboxes (sandbox.c) are never reached from here either. */
void
sbx_prelogin(void)
{
	abort();
}

void
sbx_user(struct sbx_rule *rule, size_t n)
{
	(void)rule;
	(void)n;
	abort();
}

size_t
md_prepare(const struct pop_user *u, struct sbx_rule *rule, size_t max)
{
	(void)u;
	(void)rule;
	(void)max;
	abort();
}

struct fz_ent {
	int		 found;
	int		 ids;
	uint32_t	 uid, gid;
	char		 mailbox[4096];
};

static int
fz_user_ok(const char *s, size_t n)
{
	size_t	 i;

	if (n == 0 || n > POP3_USER_MAX || s[0] == '.' || s[0] == '-')
		return 0;
	for (i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == '/' || s[i] == ':')
			return 0;
	return 1;
}

static int
fz_id(const char *s, size_t n, uint32_t *v)
{
	uint64_t	 x = 0;
	size_t		 i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		x = x * 10 + (uint64_t)(s[i] - '0');
		if (x >= UINT32_MAX)
			return 0;
	}
	*v = (uint32_t)x;
	return 1;
}

/* The rules, read independently: the entry of user in f. */
static void
fz_lookup(const char *f, size_t len, const char *user, struct fz_ent *r)
{
	const char	*l, *e, *fld[5], *fe[5], *p;
	size_t		 n, k, i;

	memset(r, 0, sizeof(*r));
	for (l = f; l < f + len; l = e + 1) {
		if ((e = memchr(l, '\n', (size_t)(f + len - l))) == NULL)
			e = f + len;
		n = (size_t)(e - l);
		if (n > AUTH_LINE_MAX || memchr(l, '\0', n) != NULL)
			continue;
		if (n > 0 && l[0] == '#')
			continue;
		for (i = 0; i < n && (l[i] == ' ' || l[i] == '\t'); i++)
			;
		if (i == n)
			continue;
		for (k = 0, p = l; k < 5; k++) {
			fld[k] = p;
			if (k == 4 || (p = memchr(p, ':', (size_t)(e - p))) ==
			    NULL) {
				fe[k] = e;
				k++;
				break;
			}
			fe[k] = p++;
		}
		if (k != 2 && k != 4 && k != 5)
			continue;
		if (!fz_user_ok(fld[0], (size_t)(fe[0] - fld[0])) ||
		    fe[1] == fld[1] || fe[1] - fld[1] > AUTH_HASH_MAX)
			continue;
		if (k >= 4 && (!fz_id(fld[2], (size_t)(fe[2] - fld[2]),
		    &r->uid) || !fz_id(fld[3], (size_t)(fe[3] - fld[3]),
		    &r->gid)))
			continue;
		if (k == 5 && (fld[4] == fe[4] || fld[4][0] != '/' ||
		    (size_t)(fe[4] - fld[4]) >= sizeof(r->mailbox)))
			continue;
		if (strlen(user) != (size_t)(fe[0] - fld[0]) ||
		    memcmp(user, fld[0], strlen(user)) != 0)
			continue;
		r->found = 1;
		r->ids = k >= 4;
		if (!r->ids)
			r->uid = r->gid = 0;
		if (k == 5)
			memcpy(r->mailbox, fld[4], (size_t)(fe[4] - fld[4]));
		return;
	}
	memset(r, 0, sizeof(*r));
}

static void
fz_one(const char *path, const uint8_t *data, size_t size, const char *user)
{
	static struct auth_pwent e;
	static struct fz_ent	 r;
	int			 v;

	fz_lookup((const char *)data, size, user, &r);
	v = pw_check(path, user, "secret", &e, 0);
	FZ_CHECK(v == (r.found ? AUTH_OK : AUTH_UNKNOWN), "user %s: verdict "
	    "%d, expected %s", user, v, r.found ? "OK" : "UNKNOWN");
	if (v == AUTH_OK) {
		FZ_CHECK(memchr(e.mailbox, '\0', sizeof(e.mailbox)) != NULL,
		    "mailbox not terminated");
		FZ_CHECK(e.ids == r.ids && (!r.ids || (e.uid == r.uid &&
		    e.gid == r.gid)), "user %s: ids %d %lu:%lu, expected %d "
		    "%lu:%lu", user, e.ids, (unsigned long)e.uid,
		    (unsigned long)e.gid, r.ids, (unsigned long)r.uid,
		    (unsigned long)r.gid);
		FZ_CHECK(strcmp(e.mailbox, r.mailbox) == 0, "user %s: mailbox "
		    "%s, expected %s", user, e.mailbox, r.mailbox);
		FZ_CHECK(e.hash[0] == '\0', "hash left in the entry");
	}
	v = pw_check(path, user, "wrong", &e, 0);
	FZ_CHECK(v == (r.found ? AUTH_BADPASS : AUTH_UNKNOWN), "user %s: "
	    "wrong password: verdict %d", user, v);
}

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		 path[64], user[POP3_USER_MAX + 1];
	const uint8_t	*l, *e, *c;
	size_t		 n;
	int		 fd, k;

	opt.debug = 0;
	fd = fz_memfd("passwd", data, size);
	(void)snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	fz_one(path, data, size, "alice");
	/* The names of the first three lines. */
	for (k = 0, l = data; k < 3 && l < data + size; k++, l = e + 1) {
		if ((e = memchr(l, '\n', (size_t)(data + size - l))) == NULL)
			e = data + size;
		c = memchr(l, ':', (size_t)(e - l));
		n = (size_t)((c != NULL ? c : e) - l);
		if (n == 0 || n > POP3_USER_MAX || memchr(l, '\0', n) != NULL)
			continue;
		memcpy(user, l, n);
		user[n] = '\0';
		if (auth_user_valid(user))
			fz_one(path, data, size, user);
	}
	(void)close(fd);
	return 0;
}
