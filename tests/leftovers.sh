#!/bin/bash
# leftovers.sh before FILE | after FILE: what make check's tests leave
# outside the tree, listed before the run (into FILE) and removed after it
# if it was not in FILE:
#   /tmp/pam.X          pam_wrapper's copy of the PAM services, left by a
#                       process that dropped root or was killed; removed
#                       only when the process its pid file names is gone
#   /run/pop3d-empty    the pre-login root of root-mode sessions (rmdir:
#                       only if empty)
#   /var/tmp/pop3d-UID  the index caches of sessions run without -c, as
#   /var/cache/pop3d    a user and as root
# Names come from the globs themselves, never from a command's output, so
# a name with blanks or glob characters is one name, and only names of
# these exact forms are taken.  (pytest's temporaries are the Makefile's:
# --basetemp.)
set -u
shopt -s nullglob extglob

list() {
	local p
	for p in /tmp/pam.? /run/pop3d-empty /var/tmp/pop3d-+([0-9]) \
	    /var/cache/pop3d; do
		if [[ -e $p || -L $p ]]; then
			printf '%s\n' "$p"
		fi
	done
}

case ${1-} in
before)
	list > "$2"
	;;
after)
	list | while IFS= read -r p; do
		if grep -qxF -- "$p" "$2"; then
			continue
		fi
		case $p in
		/tmp/pam.?)
			pid=$(cat -- "$p/pid" 2>/dev/null)
			if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
			then
				continue
			fi
			rm -rf -- "$p"
			;;
		/run/pop3d-empty)
			rmdir -- "$p" 2>/dev/null
			;;
		*)
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
