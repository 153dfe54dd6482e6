#!/usr/bin/env bash
# Instructions per packet of dpdk-testpmd macswap, dsrlb bench --io and dsrlb
# bench on the same capture, counted by valgrind's callgrind: unlike Mpps on a
# shared machine, the counts hardly move from run to run. Each program runs
# under callgrind with one profile per thread; after a warm-up (start-up,
# capture loading, flow table filling) the counters are zeroed, and after the
# window they are dumped. The count is the forwarding thread's (the thread
# that executed the most instructions): what it costs per packet to receive,
# process and send, PMD included; the control thread's work is left out.
# Packets in the window: the calls of net_pcap's rx function (the PMD
# function with the most instructions of its own: it copies every packet)
# times BURST, since every rx burst of infinite_rx is full. The same PMD
# code runs under all three programs.
#
# With a second capture (CAPTURE6, make bench gives the IPv6 64-byte mix)
# dsrlb runs once more on it and the IPv6 count is printed beside the IPv4
# one (about 2 minutes more).
#
# Usage: testbed/bench-instr.sh [CAPTURE [CAPTURE6]]   (make bench runs it at the end)
# Knobs: BENCH_DIR, BIN, INSTR_WARMUP (s, 45), INSTR_SECONDS (s, 60).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/dsrlb}
DIR=${BENCH_DIR:-/tmp/dsrlb-bench}
CAP=${1:-$DIR/mix64.pcap}
CAP6=${2:-}
WARM=${INSTR_WARMUP:-45}
WIN=${INSTR_SECONDS:-60}
CFG=testbed/bench/bench.yaml
BURST=32
log() { echo "bench-instr: $*" >&2; }
for c in valgrind callgrind_control callgrind_annotate dpdk-testpmd; do
	command -v "$c" >/dev/null || { log "$c not found (make deps installs it)"; exit 1; }
done
[ -f "$CAP" ] || { log "$CAP missing: make bench generates it"; exit 1; }
[ -z "$CAP6" ] || [ -f "$CAP6" ] || { log "$CAP6 missing: make bench generates it"; exit 1; }

# total_ir FILE: the instructions of a callgrind dump.
total_ir() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

# busiest DUMPS...: the per-thread dump with the most instructions.
busiest() {
	local f best="" max=-1 n
	for f in "$@"; do
		n=$(total_ir "$f")
		if [ "${n:-0}" -gt "$max" ]; then max=$n; best=$f; fi
	done
	echo "$best"
}

# rx_bursts FILE: calls of net_pcap's rx function in a callgrind dump: the
# function of librte_net_pcap with the largest self cost.
rx_bursts() {
	awk '
		/^c?ob=/ { id = $1; sub(/^c?ob=/, "", id); if (NF > 1) ob[id] = $2; if (/^ob=/) inpmd = (ob[id] ~ /librte_net_pcap/); next }
		/^fn=/ { fn = $1; sub(/^fn=/, "", fn); next }
		/^cfn=/ { cfn = $1; sub(/^cfn=/, "", cfn); next }
		/^calls=/ { n = $1; sub(/^calls=/, "", n); calls[cfn] += n; skip = 1; next }
		/^[0-9+*-]/ { if (skip) { skip = 0; next } if (inpmd) self[fn] += $2; next }
		END { best = ""; for (f in self) if (best == "" || self[f] > self[best]) best = f; print calls[best] + 0 }
	' "$1"
}

# window NAME PID: zero the counters after the warm-up, dump after the
# window; prints "instructions packets".
window() {
	local name=$1 pid=$2 out=$DIR/instr-$1 dump t=0
	# The warm-up counts from when the forwarding lcore exists: under
	# callgrind a program's start can take from seconds to minutes.
	while ! grep -qs '^rte-worker' /proc/"$pid"/task/*/comm && [ $t -lt 300 ]; do
		sleep 1
		t=$((t + 1))
	done
	if [ $t -ge 300 ]; then
		log "$name: no forwarding lcore after ${t}s"
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		rm -rf "/var/run/dpdk/dsrlb-$pid"
		echo "0 0"
		return
	fi
	sleep "$WARM"
	callgrind_control -z "$pid" >/dev/null 2>&1
	sleep "$WIN"
	callgrind_control --dump=window "$pid" >/dev/null 2>&1
	sleep 2 # the dump is written by the program's own threads
	# Under valgrind a Go program takes minutes to act on SIGINT; the dump
	# is all that is needed.
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -rf "/var/run/dpdk/dsrlb-$pid"
	# shellcheck disable=SC2046 # file names without spaces
	dump=$(busiest $(ls "$out".cg.1 "$out".cg.1-* 2>/dev/null))
	[ -n "$dump" ] || { log "$name: no callgrind dump"; echo "0 0"; return; }
	echo "$(total_ir "$dump") $(($(rx_bursts "$dump") * BURST))"
}

run_testpmd() {
	local out=$DIR/instr-macswap
	rm -f "$out".cg*
	valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out.cg" \
		dpdk-testpmd --no-huge --no-pci -m 600 --file-prefix "dsrlb-ci$$" -l 0,1 --log-level '*:warning' \
		--vdev "net_pcap0,rx_pcap=$CAP,infinite_rx=1" -- --forward-mode=macswap --nb-cores=1 --burst=$BURST \
		--total-num-mbufs=77824 --mbuf-size=384 --stats-period 1 --no-mlockall </dev/null >"$out.log" 2>&1 &
	window macswap $!
	rm -rf "/var/run/dpdk/dsrlb-ci$$"
}

# run_dsrlb NAME [--io]; the capture is $CAP, or $2 of NAME dsrlb6. A
# run whose window saw no packet (its start stalled under callgrind: once
# in a make bench of 4 Dec 2026, a garbage collector mark worker spun for
# the whole warm-up and window before any lcore started) runs once more.
run_dsrlb() {
	local name=$1 out=$DIR/instr-$1 cap=$CAP try res
	shift
	[ "$name" != dsrlb6 ] || cap=$CAP6
	for try in 1 2; do
		rm -f "$out".cg*
		GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out.cg" \
			"$BIN" bench --config "$CFG" --pcap "$cap" --seconds $((WIN * 10)) --warmup 1 --log-level warn "$@" \
			>"$out.log" 2>&1 &
		# Not in a subshell: window waits for the program, its child.
		window "$name" $! >"$out.try"
		res=$(cat "$out.try")
		[ "${res#* }" = 0 ] && [ $try = 1 ] && { log "$name: no packet in the window; running it again"; continue; }
		break
	done
	echo "$res"
}

log "callgrind: ${WARM}s warm-up, ${WIN}s window per program (testpmd and dsrlb --io together, then dsrlb)"
run_testpmd >"$DIR/instr-macswap.res" &
tp=$!
run_dsrlb io --io >"$DIR/instr-io.res"
wait "$tp"
run_dsrlb dsrlb >"$DIR/instr-dsrlb.res"

per() { awk '{ if ($2 > 0) printf "%.0f", $1 / $2; else print "n/a" }' "$DIR/instr-$1.res"; }
m=$(per macswap); g=$(per io); d=$(per dsrlb)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf 'instr     instructions per packet (callgrind): macswap %s  dsrlb --io %s  dsrlb %s;  macswap/dsrlb %s  macswap/(dsrlb --io) %s  (packets: %s %s %s)\n' \
	"$m" "$g" "$d" "$(ratio "$m" "$d")" "$(ratio "$m" "$g")" \
	"$(awk '{print $2}' "$DIR/instr-macswap.res")" "$(awk '{print $2}' "$DIR/instr-io.res")" "$(awk '{print $2}' "$DIR/instr-dsrlb.res")"
if [ -n "$CAP6" ]; then
	run_dsrlb dsrlb6 >"$DIR/instr-dsrlb6.res"
	d6=$(per dsrlb6)
	printf 'instr-v6  instructions per packet (callgrind): dsrlb IPv6 mix %s  IPv4 mix %s;  IPv6/IPv4 %s  (packets: %s)\n' \
		"$d6" "$d" "$(ratio "$d6" "$d")" "$(awk '{print $2}' "$DIR/instr-dsrlb6.res")"
fi
