#!/usr/bin/env bash
# make bench: the dsrlb data plane against dpdk-testpmd on the same capture,
# the same device (net_pcap replaying the capture from memory, its tx a null
# sink) and the same forwarding core, alternating A B A B so that the noise
# of a shared machine hits both alike. Prints each median and the ratios;
# docs/performance.md explains the method and records results.
#
# Knobs (environment): BENCH_DIR (work dir, default /tmp/dsrlb-bench),
# BENCH_SECONDS (measurement window per run, 4), BENCH_ROUNDS (3),
# BENCH_QUICK=1 (one round, 64-byte mix only), BENCH_ALT_PHASE and
# BENCH_ALT_SECONDS (--alternate phase and window: 0.5, 12), BENCH_INSTR=0 (skip the
# instruction counts of testbed/bench-instr.sh), BIN (bin/dsrlb).
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
need editcap
need capinfos
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

# quiet waits (up to about 6 s) until the machine is idle: other people's jobs
# on a 2-core box would otherwise land in one run and not the next.
quiet() {
	local t=0 b
	while b=$(busy_pct); [ "$b" -gt 10 ] && [ $t -lt 6 ]; do t=$((t + 1)); sleep 0.5; done
	[ "$b" -le 10 ] || log "machine still ${b}% busy; measuring anyway"
}

# median of the numbers on stdin
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print 0; exit} if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

# json_num KEY: the first numeric value of "KEY" in the JSON on stdin.
json_num() { grep -o "\"$1\":[0-9.e+-]*" | head -1 | cut -d: -f2; }

# Each run prints two numbers: the median of its per-second rates (Mpps,
# wall clock) and its rate per CPU-second of the forwarding thread (packets
# over the thread's own run time in /proc/.../schedstat, i.e. the rate it
# would have with the CPU to itself). On a quiet machine they agree; on a
# shared one the second still compares like with like.

# run_dsrlb CAPTURE WORKERS TAG [FLOWCAP [EXTRA]]: one `dsrlb bench`; keeps
# the JSON. EXTRA are more flags, split on spaces: --io for dsrlb's own
# loop without the load balancer, --cycle N for N times the capture's flows.
run_dsrlb() {
	local cap=$1 workers=$2 tag=$3 flowcap=${4:-0} extra=${5:-} out
	quiet
	# shellcheck disable=SC2086 # extra is flags separated by spaces
	out=$("$BIN" bench --config "$CFG" --pcap "$cap" --seconds "$SECS" --warmup "$WARMUP" \
		--workers "$workers" --flow-capacity "$flowcap" --log-level warn $extra 2>>"$DIR/dsrlb.log" | tail -1)
	echo "$out" >"$DIR/$tag.json"
	local norm
	norm=$(echo "$out" | grep -o '"mpps_per_cpu_second":\[[^]]*\]' | grep -o '[0-9.]*' | awk '{s+=$1} END {print s+0}')
	echo "$(echo "$out" | json_num median_sample_mpps) $norm"
}

# run_testpmd MODE CAPTURE DATAROOM MBUFS [CORES]: dpdk-testpmd with one
# forwarding core (lcore 1, the worker lcore of dsrlb) over the same port;
# with CORES=2, two forwarding cores on two rx queues, each replaying half
# of the capture (dsrlb --workers 2 splits it by flow; to io and macswap
# the packets' flows do not matter), placed on the CPUs as dsrlb places
# its two workers (lcore 1 on CPU 1, lcore 2 on CPU 0, the main lcore on
# either). Prints the median Mpps (wall) and the rate per CPU-second of
# the forwarding threads.
run_testpmd() {
	local mode=$1 cap=$2 room=$3 mbufs=$4 cores=${5:-1} mem log pid r0 r1 t0 t1 l0 l1 i t tids=() vdev lc
	mem=$(( mbufs * (room + 192) / 1048576 + 512 ))
	log="$DIR/testpmd-$mode-$cores.log"
	vdev="net_pcap0,rx_pcap=$cap,infinite_rx=1"
	lc=(-l 0,1)
	if [ "$cores" = 2 ]; then
		halves "$cap"
		vdev="net_pcap0,rx_pcap=$cap.half0,rx_pcap=$cap.half1,infinite_rx=1"
		lc=(--lcores '0@(0-1),1@1,2@0')
	fi
	quiet
	"$TESTPMD" --no-huge --no-pci -m "$mem" --file-prefix "dsrlb-tp$$" \
		"${lc[@]}" --log-level '*:warning' --vdev "$vdev" -- \
		--forward-mode="$mode" --nb-cores="$cores" --rxq="$cores" --txq="$cores" --burst=32 --total-num-mbufs="$mbufs" --mbuf-size="$room" \
		--stats-period 1 --no-mlockall </dev/null >"$log" 2>&1 &
	pid=$!
	for ((i = 0; i < 300; i++)); do grep -q 'Rx-pps' "$log" 2>/dev/null && break; sleep 0.1; done
	sleep "$WARMUP"
	for t in /proc/$pid/task/*; do
		case "$(cat "$t/comm" 2>/dev/null)" in rte-worker-*) tids+=("${t##*/}") ;; esac
	done
	cpu_ns() { local s=0 x; for x in "${tids[@]}"; do s=$((s + $(awk '{print $1}' "/proc/$pid/task/$x/schedstat" 2>/dev/null || echo 0))); done; echo "$s"; }
	l0=$(grep -c 'Rx-pps' "$log"); t0=$(date +%s%N); r0=$(cpu_ns)
	sleep "$SECS"
	l1=$(grep -c 'Rx-pps' "$log"); t1=$(date +%s%N); r1=$(cpu_ns)
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -rf "/var/run/dpdk/dsrlb-tp$$" # the EAL leaves its runtime directory behind
	tr -d '\033' <"$log" | grep -o 'Rx-pps: *[0-9]*' | awk '{print $2/1e6}' | sed -n "$((l0 + 1)),${l1}p" >"$log.rates"
	local med mean
	med=$(median <"$log.rates")
	mean=$(awk '{s+=$1} END {if (NR) print s/NR; else print 0}' "$log.rates")
	# Per CPU-second: the port's rate over the forwarding threads' mean
	# share of a CPU.
	awk -v med="$med" -v mean="$mean" -v r=$((r1 - r0)) -v t=$((t1 - t0)) -v n="${#tids[@]}" \
		'BEGIN { share = (t > 0 && n > 0) ? r / t / n : 0; printf "%s %s\n", med, (share > 0.05) ? mean / share : 0 }'
}

# halves CAPTURE: CAPTURE.half0 and CAPTURE.half1, its first and second
# half of the packets (editcap, from tshark's wireshark-common), made once.
halves() {
	local cap=$1 n h
	[ -s "$cap.half1" ] && [ "$cap.half1" -nt "$cap" ] && return
	n=$(capinfos -c -M "$cap" | awk '/Number of packets/ {print $NF}')
	h=$((n / 2))
	editcap -F pcap -r "$cap" "$cap.half0" "1-$h"
	editcap -F pcap -r "$cap" "$cap.half1" "$((h + 1))-$n"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }

# compare NAME CAPTURE [FLOWCAP]: dsrlb, macswap, io and dsrlb --io
# alternated for ROUNDS rounds; prints the medians (wall clock, then per
# CPU-second) and ratios. dsrlb --io is dsrlb's burst loop and DPDK binding
# with no load balancing: against testpmd io it measures what Go and cgo
# cost, and dsrlb against it what the load balancer costs.
compare() {
	local name=$1 cap=$2 flowcap=${3:-0} r d m i g room mbufs
	local dw=() dn=() mw=() mn=() iw=() in=() gw=() gn=() rm=() ri=()
	for ((r = 1; r <= ROUNDS; r++)); do
		d=$(run_dsrlb "$cap" 1 "$name-dsrlb-$r" "$flowcap")
		# testpmd gets the data room and pool size dsrlb chose.
		room=$(json_num data_room <"$DIR/$name-dsrlb-$r.json")
		mbufs=$(json_num pool_mbufs <"$DIR/$name-dsrlb-$r.json")
		m=$(run_testpmd macswap "$cap" "$room" "$mbufs")
		i=$(run_testpmd io "$cap" "$room" "$mbufs")
		g=$(run_dsrlb "$cap" 1 "$name-dsrlb-io-$r" "$flowcap" --io)
		log "$name round $r (Mpps wall, per CPU-second): dsrlb $d | macswap $m | io $i | dsrlb --io $g"
		dw+=("${d% *}"); dn+=("${d#* }"); mw+=("${m% *}"); mn+=("${m#* }"); iw+=("${i% *}"); in+=("${i#* }")
		gw+=("${g% *}"); gn+=("${g#* }")
		# Per-round ratios of neighbouring runs: the noise of a shared
		# machine moves both sides of a round alike.
		rm+=("$(ratio "${d% *}" "${m% *}")"); ri+=("$(ratio "${d% *}" "${i% *}")")
	done
	local a b c x y z ga gx
	a=$(printf '%s\n' "${dw[@]}" | median); b=$(printf '%s\n' "${mw[@]}" | median); c=$(printf '%s\n' "${iw[@]}" | median)
	x=$(printf '%s\n' "${dn[@]}" | median); y=$(printf '%s\n' "${mn[@]}" | median); z=$(printf '%s\n' "${in[@]}" | median)
	ga=$(printf '%s\n' "${gw[@]}" | median); gx=$(printf '%s\n' "${gn[@]}" | median)
	{
		printf '%-9s wall:    dsrlb %6.2f  macswap %6.2f  io %6.2f Mpps  dsrlb/macswap %s  dsrlb/io %s\n' \
			"$name" "$a" "$b" "$c" "$(ratio "$a" "$b")" "$(ratio "$a" "$c")"
		printf '%-9s per-CPU: dsrlb %6.2f  macswap %6.2f  io %6.2f Mpps  dsrlb/macswap %s  dsrlb/io %s\n' \
			"$name" "$x" "$y" "$z" "$(ratio "$x" "$y")" "$(ratio "$x" "$z")"
		printf '%-9s median of per-round ratios (wall): dsrlb/macswap %s  dsrlb/io %s\n' "$name" \
			"$(printf '%s\n' "${rm[@]}" | median)" "$(printf '%s\n' "${ri[@]}" | median)"
		printf '%-9s dsrlb --io: wall %6.2f  per-CPU %6.2f Mpps  (dsrlb --io)/io %s  dsrlb/(dsrlb --io) %s\n' \
			"$name" "$ga" "$gx" "$(ratio "$ga" "$c")" "$(ratio "$a" "$ga")"
		printf '%-9s runs (wall): dsrlb %s | macswap %s | io %s | dsrlb --io %s\n' "$name" "${dw[*]}" "${mw[*]}" "${iw[*]}" "${gw[*]}"
	} | tee -a "$RESULTS"
}

# rounds NAME RUN_A RUN_B [SHARE DETAIL]: ROUNDS rounds of RUN_A then RUN_B
# (functions given the round, printing Mpps wall and per CPU-second of the
# forwarding threads), and the ratio B/A of the medians and the median of
# the per-round ratios (neighbouring runs: the host's noise moves both
# alike). SHARE and DETAIL, given the round, print B's cpu_share (for the
# runs line) and more of B for the round's log line.
rounds() {
	local name=$1 runa=$2 runb=$3 share=${4:-} detail=${5:-} r a b
	local aw=() an=() bw=() bn=() rw=() rn=() sh=()
	for ((r = 1; r <= ROUNDS; r++)); do
		a=$("$runa" "$r")
		b=$("$runb" "$r")
		aw+=("${a% *}"); an+=("${a#* }"); bw+=("${b% *}"); bn+=("${b#* }")
		rw+=("$(ratio "${b% *}" "${a% *}")"); rn+=("$(ratio "${b#* }" "${a#* }")")
		if [ -n "$share" ]; then
			sh+=("$("$share" "$r")")
			log "$name round $r (Mpps wall, per CPU-second): A $a | B $b ($("$detail" "$r"))"
		else
			log "$name round $r (Mpps wall, per CPU-second): A $a | B $b"
		fi
	done
	local ma mb na nb
	ma=$(printf '%s\n' "${aw[@]}" | median); mb=$(printf '%s\n' "${bw[@]}" | median)
	na=$(printf '%s\n' "${an[@]}" | median); nb=$(printf '%s\n' "${bn[@]}" | median)
	{
		printf '%-9s wall: A %6.2f  B %6.2f Mpps  B/A %s (median of per-round ratios %s)\n' "$name" "$ma" "$mb" \
			"$(ratio "$mb" "$ma")" "$(printf '%s\n' "${rw[@]}" | median)"
		printf '%-9s per-CPU: A %6.2f  B %6.2f Mpps  B/A %s (median of per-round ratios %s)\n' "$name" "$na" "$nb" \
			"$(ratio "$nb" "$na")" "$(printf '%s\n' "${rn[@]}" | median)"
		printf '%-9s runs (wall): A %s | B %s%s\n' "$name" "${aw[*]}" "${bw[*]}" "${share:+ | B cpu_share ${sh[*]}}"
	} | tee -a "$RESULTS"
}

# pair NAME CAPA CAPACITY_A WORKERS_A CAPB CAPACITY_B WORKERS_B [EXTRA
# [EXTRA_B]]: rounds of dsrlb on A (with EXTRA, e.g. --io) and on B (with
# EXTRA_B, default EXTRA). The helpers below read pair's locals (bash
# scopes dynamically).
pair() {
	local name=$1 capa=$2 fca=$3 wa=$4 capb=$5 fcb=$6 wb=$7 extra=${8:-}
	local extrab=${9-$extra}
	rounds "$name" pair_a pair_b pair_share pair_detail
}
pair_a() { run_dsrlb "$capa" "$wa" "$name-a-$1" "$fca" "$extra"; }
pair_b() { run_dsrlb "$capb" "$wb" "$name-b-$1" "$fcb" "$extrab"; }
pair_share() { grep -o '"cpu_share":\[[^]]*\]' "$DIR/$name-b-$1.json" | cut -d: -f2; }
pair_detail() {
	local j=$DIR/$name-b-$1.json
	echo "B's cpu_share $(pair_share "$1"), per worker $(grep -o '"mpps_per_worker":\[[^]]*\]' "$j" | cut -d: -f2), dsrlb's other threads $(json_num other_threads_cpu <"$j") CPU, rest of the host $(json_num host_other_cpu <"$j") CPU"
}

# tpair NAME MODE CAPTURE ROOM MBUFS: rounds of dpdk-testpmd MODE with one
# forwarding core (A) and two (B): how the reference forwarder itself
# scales on this PMD and machine, beside dsrlb's two workers in the same
# run.
tpair() {
	local name=$1 mode=$2 cap=$3 room=$4 mbufs=$5
	rounds "$name" tpair_a tpair_b
}
tpair_a() { run_testpmd "$mode" "$cap" "$room" "$mbufs" 1; }
tpair_b() { run_testpmd "$mode" "$cap" "$room" "$mbufs" 2; }

# each_cpu_a ROUND: one worker on the CPU of the pair's first worker
# (lcore 1 on CPU 1) and then one on the CPU of its second (CPU 2, or CPU 0
# on a 2-CPU machine, as the pair places it), their rates added.
# each_cpu_b ROUND: the pair.
each_cpu_a() {
	local second=2 main=0 a b
	if [ "$(nproc)" -le 2 ]; then second=0 main=1; fi
	a=$(run_dsrlb "$DIR/mix64.pcap" 1 "2w-vs-1w-each-cpu-a1-$1")
	b=$(run_dsrlb "$DIR/mix64.pcap" 1 "2w-vs-1w-each-cpu-a2-$1" 0 "--lcores 0@$main,1@$second")
	awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%s %s\n", x[1] + y[1], x[2] + y[2] }'
}
each_cpu_b() { run_dsrlb "$DIR/mix64.pcap" 2 "2w-vs-1w-each-cpu-b-$1" 0 "$STRIDE"; }

# alternated NAME [EXTRA]: ROUNDS runs of `dsrlb bench --workers 2
# --alternate PHASE` (with EXTRA, e.g. --io) on the 64k capture: in one
# process, both workers together, then worker 0 alone, together, worker 1
# alone, PHASE seconds each, over a window of ALT_SECONDS. Separate runs of
# one worker and of two compare CPUs whose speed has moved in between;
# these phases compare the same CPUs within a second. Prints the median of
# the runs' ratios (each the median of its per-cycle ratios: both workers
# over one alone on a CPU of average speed, 2 at best) and each run's.
STRIDE="--queue-stride 2"
ALT_PHASE=${BENCH_ALT_PHASE:-0.5}
ALT_SECONDS=${BENCH_ALT_SECONDS:-12}
alternated() {
	local name=$1 extra=${2:-} r out rs=() alls=() alone=()
	for ((r = 1; r <= ROUNDS; r++)); do
		quiet
		# shellcheck disable=SC2086 # extra is flags separated by spaces
		out=$("$BIN" bench --config "$CFG" --pcap "$DIR/mix64.pcap" --seconds "$ALT_SECONDS" --warmup "$WARMUP" \
			--workers 2 --alternate "$ALT_PHASE" $STRIDE --log-level warn $extra 2>>"$DIR/dsrlb.log" | tail -1)
		echo "$out" >"$DIR/$name-$r.json"
		rs+=("$(echo "$out" | grep -o '"ratio":[0-9.]*' | cut -d: -f2)")
		alls+=("$(echo "$out" | grep -o '"all_mpps":\[[^]]*\]' | grep -o '[0-9.]*' | median)")
		alone+=("$(echo "$out" | grep -o '"alone_mpps":\[\[[^]]*\],\[[^]]*\]\]' | sed 's/"alone_mpps"://')")
		log "$name run $r: ratio ${rs[-1]}, both workers (median of phases) ${alls[-1]} Mpps, alone $(echo "${alone[-1]}")"
	done
	printf '%-9s two workers / one, phases of %s s in one process: %s (median of %d runs: %s; both together, median Mpps: %s)\n' \
		"$name" "$ALT_PHASE" "$(printf '%s\n' "${rs[@]}" | median)" "$ROUNDS" "${rs[*]}" "${alls[*]}" | tee -a "$RESULTS"
}

# ratios: 1M flows against 64k, one worker, alternated. First the flow
# table alone (1m-vs-64k-cycled): both runs replay the 64k capture into a
# 4M-entry table and rewrite every packet's client port per pass over it
# (dsrlb bench --cycle), A with 1 pass (the capture's 64k flows), B with 16
# (1M flows): the same capture, pool and per-packet work, only the number
# of distinct flows differs. Then the 1M-packet capture against the 64k
# one (A: default table; B: 4M entries), with and without the load
# balancer (--io): that ratio also carries the cost of replaying a
# 1M-packet capture (a 1M-mbuf pool streamed from DRAM and copied by
# net_pcap), which a NIC's small ring of recycled mbufs does not have.
# Then two workers on two rx queues (the capture split by flow) against
# one, on the 64k capture: on a 2-CPU machine the workers take both CPUs
# and the main lcore (and everything else on the host) shares them.
ratios() {
	log "1m-vs-64k-cycled: the 64k capture, 4M-entry table, A = --cycle 1 (64k flows), B = --cycle 16 (1M flows)"
	pair 1m-vs-64k-cycled "$DIR/mix64.pcap" 4194304 1 "$DIR/mix64.pcap" 4194304 1 "--cycle 1" "--cycle 16"
	log "1m-vs-64k: A = 64k flows, B = 1M flows (one worker)"
	pair 1m-vs-64k "$DIR/mix64.pcap" 0 1 "$DIR/mix64-1m.pcap" 4194304 1
	# The same with --io (no flow table): what replaying a capture of 1M
	# packets (a 1M-mbuf pool streamed from DRAM) costs by itself.
	log "1m-vs-64k-io: the same with dsrlb --io"
	pair 1m-vs-64k-io "$DIR/mix64.pcap" 0 1 "$DIR/mix64-1m.pcap" 4194304 1 --io
	# Two workers poll rx queues 0 and 2 of the net_pcap port (queue 1
	# replays one packet and is never polled): net_pcap's adjacent rx
	# queues share a cache line between one's packet counters and the
	# next one's ring pointer (appliance.DataplaneOptions.QueueStride).
	# 2w-vs-1w-adjacent keeps the pair on queues 0 and 1, as before.
	log "2w-vs-1w: A = one worker, B = two workers on rx queues 0 and 2 (64k flows)"
	pair 2w-vs-1w "$DIR/mix64.pcap" 0 1 "$DIR/mix64.pcap" 0 2 "" "$STRIDE"
	log "2w-vs-1w-adjacent: the same, B on rx queues 0 and 1"
	pair 2w-vs-1w-adjacent "$DIR/mix64.pcap" 0 1 "$DIR/mix64.pcap" 0 2
	# The two CPUs of a VM need not be equal, and their speeds drift with
	# the host (by up to half, minutes apart, on the machine of
	# docs/performance.md): against one worker on the CPU of 2w-vs-1w's A
	# alone, the pair's ratio moves with them. Here A is one worker on each
	# of the pair's two CPUs, one run after the other, added: B/A is the
	# share of that sum the pair forwards (0.9 is 1.8 times one worker on
	# a CPU of average speed).
	log "2w-vs-1w-each-cpu: A = one worker on the pair's first CPU plus one on its second (two runs), B = two workers"
	rounds 2w-vs-1w-each-cpu each_cpu_a each_cpu_b
	log "2w-vs-1w-alternated: two workers against one in one process, phases of $ALT_PHASE s"
	alternated 2w-vs-1w-alternated
	log "2w-vs-1w-alternated-io: the same with dsrlb --io"
	alternated 2w-vs-1w-alternated-io --io
	# The same with --io: how two workers scale with no load balancing at
	# all (the PMD's replay, the mempool, the machine), the ceiling of the
	# pair above.
	log "2w-vs-1w-io: the same with dsrlb --io"
	pair 2w-vs-1w-io "$DIR/mix64.pcap" 0 1 "$DIR/mix64.pcap" 0 2 --io "--io $STRIDE"
	# And the reference: testpmd io and macswap with one forwarding core
	# against two on two rx queues (each half of the capture), with the
	# data room and pool of dsrlb's two-worker run. testpmd gives its
	# cores adjacent queues, 0 and 1: the false sharing that
	# 2w-vs-1w-adjacent has.
	local room mbufs
	room=$(json_num data_room <"$DIR/2w-vs-1w-b-1.json")
	mbufs=$(json_num pool_mbufs <"$DIR/2w-vs-1w-b-1.json")
	log "2w-vs-1w-testpmd-io: dpdk-testpmd io, A = one forwarding core, B = two"
	tpair 2w-vs-1w-testpmd-io io "$DIR/mix64.pcap" "$room" "$mbufs"
	log "2w-vs-1w-testpmd-macswap: dpdk-testpmd macswap, A = one forwarding core, B = two"
	tpair 2w-vs-1w-testpmd-macswap macswap "$DIR/mix64.pcap" "$room" "$mbufs"
}

log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
log "generating captures in $DIR"
"$BIN" gen --config "$CFG" --out "$DIR/mix64.pcap" --flows 65536 --sizes 64 --log-level warn
# The same mix to the IPv6 services (IPv6 frames are at least their
# headers: 66 bytes on the wire for UDP, 78 for TCP), and both families
# taking turns.
"$BIN" gen --config "$CFG" --out "$DIR/mix64-v6.pcap" --flows 65536 --sizes 64 --family 6 --log-level warn
"$BIN" gen --config "$CFG" --out "$DIR/mix64-mixed.pcap" --flows 65536 --sizes 64 --family mixed --log-level warn
# BENCH_RATIOS=1: only the ratios (1M/64k flows: cycled, 1M capture, --io; 2/1 workers).
if [ "${BENCH_RATIOS:-}" = 1 ]; then
	"$BIN" gen --config "$CFG" --out "$DIR/mix64-1m.pcap" --flows 1048576 --sizes 64 --log-level warn
	ratios
	exit 0
fi
if [ "${BENCH_QUICK:-}" = 1 ]; then
	ROUNDS=1
	compare mix64 "$DIR/mix64.pcap"
	compare mix64-v6 "$DIR/mix64-v6.pcap"
	exit 0
fi
"$BIN" gen --config "$CFG" --out "$DIR/imix.pcap" --flows 65536 --sizes imix --log-level warn
"$BIN" gen --config "$CFG" --out "$DIR/mix64-1m.pcap" --flows 1048576 --sizes 64 --log-level warn

compare mix64 "$DIR/mix64.pcap"
compare mix64-v6 "$DIR/mix64-v6.pcap"
compare mix64-mixed "$DIR/mix64-mixed.pcap"
compare imix "$DIR/imix.pcap"

# 1M flows, the flow table sized as an operator would (4M entries per
# worker; the default 1M would run full and evict), 2 rounds.
ROUNDS_SAVED=$ROUNDS
ROUNDS=2
compare mix64-1m "$DIR/mix64-1m.pcap" 4194304
ROUNDS=$ROUNDS_SAVED

ratios

# Instructions per packet under callgrind: the same comparison without the
# host's noise (about 4 minutes; BENCH_INSTR=0 skips it).
if [ "${BENCH_INSTR:-1}" = 1 ]; then
	BIN=$BIN BENCH_DIR=$DIR bash testbed/bench-instr.sh "$DIR/mix64.pcap" "$DIR/mix64-v6.pcap" | tee -a "$RESULTS"
fi
log "results in $RESULTS, JSON and logs in $DIR"
