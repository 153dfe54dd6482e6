#!/usr/bin/env bash
# failures.sh LOG: for every test that failed in a `go test -v` log, the
# last lines it logged from its _test.go files (its t.Error and t.Fatal
# messages among them; not what it dumps of a program's output), so that a
# CI log shows why and not only which. make test runs it on a failure.
# Knob: FAIL_LINES (lines per test, 40).
set -euo pipefail
log=${1:?usage: failures.sh LOG}
awk -v keep="${FAIL_LINES:-40}" '
	# go test -v names the test whose output follows: === RUN, === CONT,
	# === NAME (when output switches between parallel tests).
	/^=== (RUN|CONT|NAME|PAUSE) / { cur = $3; next }
	/^[ \t]*--- FAIL: / { name = $3; failed[name] = 1; order[++n] = name; next }
	/^(ok|FAIL|PASS)([ \t]|$)/ { cur = ""; next }
	cur != "" && /_test\.go:[0-9]+: / {
		k = cnt[cur]++ % keep
		buf[cur, k] = $0
	}
	END {
		for (i = 1; i <= n; i++) {
			name = order[i]
			if (seen[name]++) continue
			c = cnt[name] + 0
			print "==== " name " (last " (c < keep ? c : keep) " of " c " lines)"
			for (j = (c > keep ? c - keep : 0); j < c; j++) print buf[name, j % keep]
		}
	}' "$log"
