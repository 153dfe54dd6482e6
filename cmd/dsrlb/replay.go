package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
)

// cmdReplay runs the data plane over a capture: the first port's device is
// replaced by a net_pcap device reading --in and writing --out (the port's
// addresses stay). Packets for the kernel are counted, not written. A
// capture taken on a host holds what its kernel sent before checksum
// offload, so every port completes partial checksums
// (control.StoreOptions.KernelFrames). The last stdout line is the counters
// as one JSON object.
func cmdReplay(args []string) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (YAML)")
	in := fs.String("in", "", "input pcap")
	out := fs.String("out", "", "output pcap")
	newLog := logFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLog()
	if *cfgPath == "" || *in == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "dsrlb replay: --config, --in and --out are required")
		return 2
	}
	cfg, err := control.LoadFile(*cfgPath)
	if err != nil {
		return fail(log, err)
	}
	pkts, err := pcap.ReadFile(*in)
	if err != nil {
		return fail(log, err)
	}
	store, err := control.NewStore(cfg, control.StoreOptions{Log: log, KernelFrames: true})
	if err != nil {
		return fail(log, err)
	}
	t := store.Typed()
	ports := make([]dpPort, len(t.Ports))
	for i, p := range t.Ports {
		ports[i] = dpPort{Name: p.Name, Device: p.Device, MTU: p.MTU, MAC: p.MAC}
	}
	ports[0].Device = fmt.Sprintf("net_pcap_replay0,rx_pcap=%s,tx_pcap=%s", *in, *out)
	dp, err := startDataplane(dpOptions{
		EALArgs: cfg.Dataplane.EALArgs, Workers: 1, Ports: ports, Snap: store.Snapshots(),
		FlowCap: t.FlowCap, Timeouts: t.Timeouts, Seed: t.Seed,
		PoolMbufs: uint32(len(pkts)) + 16384, Log: log, Ready: store.SetPortMACs,
	})
	if err != nil {
		return fail(log, err)
	}
	// Wait until every packet of the capture has been received and handled.
	deadline := time.Now().Add(60 * time.Second)
	var rx uint64
	for time.Now().Before(deadline) {
		rx = 0
		for _, c := range dp.Counters() {
			rx += c.RxPackets
		}
		if rx >= uint64(len(pkts)) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	dp.Stop()
	st := control.BuildStats(store.Snapshots().Load(), dp.Counters())
	b, _ := json.Marshal(st)
	fmt.Println(string(b))
	if rx < uint64(len(pkts)) {
		return fail(log, errors.New("replay: timed out before every packet was received"))
	}
	return 0
}
