/*
 * pam_holdfd.so, a PAM module for tests/test_auth_root.py: in authenticate,
 * acct_mgmt and open_session it opens the file of its "file=PATH" argument
 * and keeps the descriptor open for good, as pam_systemd keeps its session
 * fd and LDAP-style modules keep privileged connections.  It fails when the
 * file cannot be opened, so a passing login shows it held one.
 */
#include <security/pam_modules.h>
#include <fcntl.h>
#include <string.h>

static int
hold(int argc, const char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strncmp(argv[i], "file=", 5) == 0 &&
		    open(argv[i] + 5, O_RDONLY) != -1)
			return PAM_SUCCESS;
	return PAM_SYSTEM_ERR;
}

int
pam_sm_authenticate(pam_handle_t *h, int flags, int argc, const char **argv)
{
	(void)h, (void)flags;
	return hold(argc, argv);
}

int
pam_sm_setcred(pam_handle_t *h, int flags, int argc, const char **argv)
{
	(void)h, (void)flags, (void)argc, (void)argv;
	return PAM_SUCCESS;
}

int
pam_sm_acct_mgmt(pam_handle_t *h, int flags, int argc, const char **argv)
{
	(void)h, (void)flags;
	return hold(argc, argv);
}

int
pam_sm_open_session(pam_handle_t *h, int flags, int argc, const char **argv)
{
	(void)h, (void)flags;
	return hold(argc, argv);
}

int
pam_sm_close_session(pam_handle_t *h, int flags, int argc, const char **argv)
{
	(void)h, (void)flags, (void)argc, (void)argv;
	return PAM_SUCCESS;
}
