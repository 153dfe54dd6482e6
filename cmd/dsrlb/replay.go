package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dsrlb/dsrlb/cmd/dsrlb/appliance"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
)

// replayStall is how long replay waits for the next received packet before
// it gives up. The data plane handles a packet in microseconds, so a pause
// this long means the device stopped reading the capture; a long capture
// on a slow machine only takes longer, it never stalls.
const replayStall = 10 * time.Second

// cmdReplay runs the data plane over a capture: the first port's device is
// replaced by a net_pcap device reading --in and writing --out (the port's
// addresses stay). Packets for the kernel are counted, not written. Health
// monitors do not run (every backend counts as up) and next hops without a
// static neighbour get placeholder MACs (replayNeighbors). A capture taken
// on a host holds what its kernel sent before checksum offload, so every
// port completes partial checksums (control.StoreOptions.KernelFrames). The
// last stdout line is the counters as one JSON object.
//
// Memory does not grow with the capture: it is counted by streaming it
// once, net_pcap reads it packet by packet as the worker polls, and the
// mbuf pool is sized by the queues (appliance.StartDataplane).
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
	// Counting first also rejects a damaged capture before the EAL starts.
	total, err := pcap.Count(*in)
	if err != nil {
		return fail(log, err)
	}
	store, err := control.NewStore(cfg, control.StoreOptions{Log: log, Neighbors: &replayNeighbors{log: log}, KernelFrames: true})
	if err != nil {
		return fail(log, err)
	}
	t := store.Typed()
	ports := make([]appliance.Port, len(t.Ports))
	for i, p := range t.Ports {
		ports[i] = appliance.Port{Name: p.Name, Device: p.Device, MTU: p.MTU, MAC: p.MAC}
	}
	ports[0].Device = fmt.Sprintf("net_pcap_replay0,rx_pcap=%s,tx_pcap=%s", *in, *out)
	// A capture taken on a host holds its TSO super-frames whole: read them
	// into one mbuf each, so that the worker segments them.
	ports[0].WholeFrames = true
	dp, err := appliance.StartDataplane(appliance.DataplaneOptions{
		EALArgs: cfg.Dataplane.EALArgs, Workers: 1, Ports: ports, Snap: store.Snapshots(),
		FlowCap: t.FlowCap, Timeouts: t.Timeouts, Seed: t.Seed,
		Log: log, Ready: store.SetPortMACs,
	})
	if err != nil {
		return fail(log, err)
	}
	waitErr := waitReplayed(dp, uint64(total), log)
	lossErr := replayLoss(dp)
	dp.Stop()
	st := control.BuildStats(store.Snapshots().Load(), dp.Counters())
	b, _ := json.Marshal(st)
	fmt.Println(string(b))
	for _, err := range []error{waitErr, lossErr} {
		if err != nil {
			return fail(log, err)
		}
	}
	if n := st.Drops["tx_full"]; n > 0 {
		return fail(log, fmt.Errorf("replay: %d packets not written to %s (tx_full)", n, *out))
	}
	return 0
}

// waitReplayed waits until the workers have received and handled total
// packets. It waits as long as packets keep coming (logging progress every
// few seconds) and fails after replayStall without one, or at once when the
// replay port lost packets (replayLoss).
func waitReplayed(d *appliance.Dataplane, total uint64, log zerolog.Logger) error {
	lastRx, lastProgress, lastLog := uint64(0), time.Now(), time.Now()
	for {
		rx := sumRx(d.Counters())
		if rx >= total {
			return nil
		}
		now := time.Now()
		if rx != lastRx {
			lastRx, lastProgress = rx, now
		}
		if idle := now.Sub(lastProgress); idle > 200*time.Millisecond {
			if err := replayLoss(d); err != nil {
				return err
			}
			if idle > replayStall {
				return fmt.Errorf("replay: %d of %d packets received, none in the last %s", rx, total, replayStall)
			}
		}
		if now.Sub(lastLog) >= 5*time.Second {
			lastLog = now
			log.Info().Str("event", "replay_progress").Uint64("packets", rx).Uint64("total", total).Msg("replaying")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// replayLoss reports packets the replay port read from the capture but
// could not hand to a worker (no mbuf, a read error): the replay would
// then be incomplete.
func replayLoss(d *appliance.Dataplane) error {
	s, err := d.PortStats(0)
	if err != nil {
		return err
	}
	if s.RxNoMbuf > 0 || s.IErrors > 0 || s.IMissed > 0 {
		return fmt.Errorf("replay: the pcap port lost packets (rx_nombuf %d, ierrors %d, imissed %d)", s.RxNoMbuf, s.IErrors, s.IMissed)
	}
	return nil
}

// replayNeighbors stands in for the kernel's neighbour table, which `run`
// resolves next hops from and replay has not: a next hop without a static
// neighbour (neighbors:, a backend's mac:) gets the placeholder MAC 02:00
// followed by its IPv4 address (of an IPv6 address, its last four bytes),
// so that the output shows where each packet would go. Each placeholder is
// logged once.
type replayNeighbors struct {
	log  zerolog.Logger
	mu   sync.Mutex
	seen map[netip.Addr]bool
}

// Lookup implements control.Neighbors.
func (n *replayNeighbors) Lookup(ip netip.Addr) ([6]byte, bool) {
	a := ip.As16()
	mac := pipeline.MAC{0x02, 0x00, a[12], a[13], a[14], a[15]}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.seen[ip] {
		if n.seen == nil {
			n.seen = map[netip.Addr]bool{}
		}
		n.seen[ip] = true
		n.log.Warn().Str("event", "replay_placeholder_mac").Str("next_hop", ip.String()).Str("mac", mac.String()).
			Msg("no static neighbour for this next hop: replay writes a placeholder MAC")
	}
	return mac, true
}
