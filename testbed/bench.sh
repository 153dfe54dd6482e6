#!/usr/bin/env bash
# make bench: the dsrlb data plane against dpdk-testpmd on the same capture,
# the same device (net_pcap replaying the capture from memory, its tx a null
# sink) and the same forwarding core, alternating A B A B so that the noise
# of a shared machine hits both alike. Prints each median and the ratios;
# docs/performance.md explains the method and records results.
#
# Knobs (environment): BENCH_DIR (work dir, default /tmp/dsrlb-bench),
# BENCH_SECONDS (measurement window per run, 4), BENCH_ROUNDS (3),
# BENCH_QUICK=1 (one round, 64-byte mix only), BIN (bin/dsrlb).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/dsrlb}
DIR=${BENCH_DIR:-/tmp/dsrlb-bench}
SECS=${BENCH_SECONDS:-4}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=1
CFG=testbed/bench/bench.yaml
TESTPMD=${TESTPMD:-dpdk-testpmd}
mkdir -p "$DIR"
RESULTS="$DIR/results.txt"
: >"$RESULTS"

log() { echo "bench: $*" >&2; }
need() { command -v "$1" >/dev/null || { log "$1 not found (make deps installs it)"; exit 1; }; }
need "$TESTPMD"
[ -x "$BIN" ] || { log "$BIN missing: run make build"; exit 1; }

# busy_pct prints the share of CPU time (all CPUs) not idle over 0.5 s.
busy_pct() {
	local a b
	read -r _ u n s i w x y z _ </proc/stat; a=($u $n $s $i $w $x $y $z)
	sleep 0.5
	read -r _ u n s i w x y z _ </proc/stat; b=($u $n $s $i $w $x $y $z)
	local tot=0 idle=$(( (b[3]-a[3]) + (b[4]-a[4]) ))
	for k in 0 1 2 3 4 5 6 7; do tot=$((tot + b[k] - a[k])); done
	[ "$tot" -gt 0 ] || { echo 0; return; }
	echo $(( 100 * (tot - idle) / tot ))
}

# quiet waits (up to 10 s) until the machine is idle: other people's jobs
# on a 2-core box would otherwise land in one run and not the next.
quiet() {
	local t=0 b
	while b=$(busy_pct); [ "$b" -gt 10 ] && [ $t -lt 20 ]; do t=$((t + 1)); sleep 0.5; done
	[ "$b" -le 10 ] || log "machine still ${b}% busy; measuring anyway"
}

# median of the numbers on stdin
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print 0; exit} if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

# json_num KEY: the first numeric value of "KEY" in the JSON on stdin.
json_num() { grep -o "\"$1\":[0-9.e+-]*" | head -1 | cut -d: -f2; }

# run_dsrlb CAPTURE WORKERS TAG: one `dsrlb bench`; prints the median of its
# per-second rates (Mpps) and keeps the JSON.
run_dsrlb() {
	local cap=$1 workers=$2 tag=$3 out
	quiet
	out=$("$BIN" bench --config "$CFG" --pcap "$cap" --seconds "$SECS" --warmup "$WARMUP" \
		--workers "$workers" --log-level warn 2>>"$DIR/dsrlb.log" | tail -1)
	echo "$out" >"$DIR/$tag.json"
	echo "$out" | json_num median_sample_mpps
}

# run_testpmd MODE CAPTURE DATAROOM MBUFS: dpdk-testpmd with one forwarding
# core (lcore 1, the worker lcore of dsrlb) over the same port; prints the
# median of its per-second Rx-pps after the warm-up, in Mpps.
run_testpmd() {
	local mode=$1 cap=$2 room=$3 mbufs=$4 mem
	mem=$(( mbufs * (room + 192) / 1048576 + 512 ))
	quiet
	timeout -s INT $((SECS + WARMUP + 3)) "$TESTPMD" --no-huge --no-pci -m "$mem" --file-prefix "dsrlb-tp$$" \
		-l 0,1 --log-level '*:warning' --vdev "net_pcap0,rx_pcap=$cap,infinite_rx=1" -- \
		--forward-mode="$mode" --nb-cores=1 --burst=32 --total-num-mbufs="$mbufs" --mbuf-size="$room" \
		--stats-period 1 --no-mlockall </dev/null 2>&1 | tr -d '\033' >"$DIR/testpmd-$mode.log" || true
	# The first lines are the start (0) and the warm-up second.
	grep -o 'Rx-pps: *[0-9]*' "$DIR/testpmd-$mode.log" | awk '{print $2}' | awk 'NR>2' | head -n "$SECS" |
		awk '{print $1/1e6}' | median
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }

# compare NAME CAPTURE: dsrlb, macswap, io alternated for ROUNDS rounds.
compare() {
	local name=$1 cap=$2 r d m i
	local ds=() ms=() is=()
	# The first dsrlb run also reports the data room and pool size it
	# chose; testpmd gets the same.
	for ((r = 1; r <= ROUNDS; r++)); do
		d=$(run_dsrlb "$cap" 1 "$name-dsrlb-$r")
		local room mbufs
		room=$(json_num data_room <"$DIR/$name-dsrlb-$r.json")
		mbufs=$(json_num pool_mbufs <"$DIR/$name-dsrlb-$r.json")
		m=$(run_testpmd macswap "$cap" "$room" "$mbufs")
		i=$(run_testpmd io "$cap" "$room" "$mbufs")
		log "$name round $r: dsrlb $d  macswap $m  io $i Mpps"
		ds+=("$d"); ms+=("$m"); is+=("$i")
	done
	local md mm mi
	md=$(printf '%s\n' "${ds[@]}" | median)
	mm=$(printf '%s\n' "${ms[@]}" | median)
	mi=$(printf '%s\n' "${is[@]}" | median)
	printf '%-10s dsrlb %7.2f Mpps  testpmd macswap %7.2f  io %7.2f  dsrlb/macswap %s  dsrlb/io %s  (runs: dsrlb %s | macswap %s | io %s)\n' \
		"$name" "$md" "$mm" "$mi" "$(ratio "$md" "$mm")" "$(ratio "$md" "$mi")" "${ds[*]}" "${ms[*]}" "${is[*]}" | tee -a "$RESULTS"
}

log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
log "generating captures in $DIR"
"$BIN" gen --config "$CFG" --out "$DIR/mix64.pcap" --flows 65536 --sizes 64 --log-level warn
if [ "${BENCH_QUICK:-}" = 1 ]; then
	ROUNDS=1
	compare mix64 "$DIR/mix64.pcap"
	exit 0
fi
"$BIN" gen --config "$CFG" --out "$DIR/imix.pcap" --flows 65536 --sizes imix --log-level warn
"$BIN" gen --config "$CFG" --out "$DIR/mix64-1m.pcap" --flows 1048576 --sizes 64 --log-level warn

compare mix64 "$DIR/mix64.pcap"
compare imix "$DIR/imix.pcap"

# 1M flows: dsrlb against macswap only (the ratio that matters), 2 rounds.
ROUNDS_SAVED=$ROUNDS
ROUNDS=2
compare mix64-1m "$DIR/mix64-1m.pcap"
ROUNDS=$ROUNDS_SAVED

# Two workers on two rx queues (the capture split by flow): on a 2-CPU
# machine the workers take both CPUs and the main lcore shares them.
w2=()
for ((r = 1; r <= ROUNDS; r++)); do
	w2+=("$(run_dsrlb "$DIR/mix64.pcap" 2 "mix64-2w-$r")")
	log "mix64 2 workers round $r: ${w2[-1]} Mpps (per worker: $(grep -o '"mpps_per_worker":\[[^]]*\]' "$DIR/mix64-2w-$r.json"))"
done
printf '%-10s dsrlb 2 workers %7.2f Mpps (runs: %s)\n' mix64-2w "$(printf '%s\n' "${w2[@]}" | median)" "${w2[*]}" | tee -a "$RESULTS"
log "results in $RESULTS, JSON and logs in $DIR"
