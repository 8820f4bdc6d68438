#!/bin/bash
# leftovers.sh before FILE | after FILE: what make check's tests leave
# outside the tree, listed before the run (into FILE) and removed after it
# if it was not in FILE:
#   /tmp/pam.X          pam_wrapper's copy of the PAM services, left by a
#                       process that dropped root or was killed: only a
#                       directory whose pid file (a regular file) names a
#                       process that is gone
#   /run/pop3d-empty    the pre-login root of root-mode sessions (rmdir:
#                       only if empty)
#   /var/tmp/pop3d-UID  the index caches of sessions run without -c, as
#   /var/cache/pop3d    a user and as root (any made during the run: only
#                       caches, which a session makes again)
# Only names of these exact forms are taken (no blank, no newline, no
# glob character), from the globs themselves; FILE must end in the line
# END that "before" writes last, else "after" removes nothing.  (pytest's
# temporaries are the Makefile's: --basetemp.)
set -u
shopt -s nullglob

list() {
	local p
	for p in /tmp/pam.? /run/pop3d-empty /var/tmp/pop3d-[0-9]* \
	    /var/cache/pop3d; do
		if [[ $p =~ ^(/tmp/pam\.[A-Za-z0-9]|/run/pop3d-empty|/var/tmp/pop3d-[0-9]+|/var/cache/pop3d)$ ]] &&
		    [[ -e $p || -L $p ]]; then
			printf '%s\n' "$p"
		fi
	done
}

# A pam_wrapper directory of a process that is gone.  (Its owner is the
# process's uid, root's or a test user's; the pid is read with a bound on
# time and size, so that a user's FIFO or endless file cannot hold us.)
stale_pam() {
	local pid
	[[ -d $1 && ! -L $1 && -f $1/pid && ! -L $1/pid ]] || return 1
	pid=$(timeout 2 head -c 20 -- "$1/pid" 2>/dev/null)
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	! kill -0 "$pid" 2>/dev/null
}

case ${1-} in
before)
	{ list && echo END; } > "$2" || exit 1
	;;
after)
	if [[ ! -r $2 || $(tail -n 1 -- "$2") != END ]]; then
		echo "leftovers.sh: no list from before the run in $2:" \
		    "nothing removed" >&2
		exit 1
	fi
	list | while IFS= read -r p; do
		if grep -qxF -- "$p" "$2"; then
			continue
		fi
		case $p in
		/tmp/pam.?)
			if stale_pam "$p"; then
				rm -rf -- "$p"
			fi
			;;
		/run/pop3d-empty)
			rmdir -- "$p" 2>/dev/null
			;;
		/var/tmp/pop3d-*|/var/cache/pop3d)
			rm -rf -- "$p"
			;;
		esac
	done
	;;
*)
	echo "usage: $0 before|after FILE" >&2
	exit 64
	;;
esac
exit 0
