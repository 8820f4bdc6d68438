/*
 * auth.h: the one record the pre-login child sends the root monitor per
 * login attempt (auth.c), and tests/test_auth_root.py's hostile child
 * (its shim includes this file).  Fixed size, every string NUL-terminated
 * inside its field; the monitor checks all of it (auth_rec_check).
 */
#ifndef AUTH_H
#define AUTH_H

#include <stdint.h>

#include "pop3d.h"

struct auth_rec {
	char		 user[POP3_USER_MAX + 1];
	char		 pass[POP3_PASS_MAX + 1];
	char		 mech[16];
	uint32_t	 ilen;			/* pipelined bytes in ibuf */
	char		 ibuf[POP3_INBUF];
};

#endif
