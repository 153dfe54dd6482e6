package nsbed

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Capture is a running tcpdump writing a pcap file.
type Capture struct {
	NS            *NS
	Iface, Filter string
	Path          string
	proc          *Proc
}

var captureSeq atomic.Int64

// StartCapture starts tcpdump on iface in the namespace with a capture
// filter (pcap-filter(7)), snaplen bytes per packet, and waits until it is
// listening.
func (n *NS) StartCapture(iface, filter string, snaplen int) (*Capture, error) {
	name := fmt.Sprintf("%s-%s-cap%d", n.Short, iface, captureSeq.Add(1))
	c := &Capture{NS: n, Iface: iface, Filter: filter, Path: n.bed.Path(name + ".pcap")}
	// --immediate-mode: without it libpcap hands packets over a ring
	// block at a time, when the block fills or its timeout (about a
	// second) passes, and Stop would lose what the last block holds.
	argv := []string{"tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root", "-s", strconv.Itoa(snaplen), "-w", c.Path}
	if filter != "" {
		argv = append(argv, filter)
	}
	p, err := n.Start(name, argv...)
	if err != nil {
		return nil, err
	}
	c.proc = p
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(p.Log); strings.Contains(string(b), "listening on") {
			return c, nil
		}
		if p.Exited() {
			return nil, fmt.Errorf("tcpdump in %s exited: %s", n.Short, p.Tail(5))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("tcpdump in %s on %s did not start: %s", n.Short, iface, p.Tail(5))
}

var droppedRE = regexp.MustCompile(`(\d+) packets? dropped by kernel`)

// Stop ends the capture (flushing the file) and returns how many packets
// the kernel dropped before tcpdump could read them. It first lets tcpdump
// catch up (Sync): on SIGTERM it drops what it has not read yet.
func (c *Capture) Stop() (dropped int, err error) {
	_ = c.Sync(2 * time.Second)
	if err := c.proc.Stop(5 * time.Second); err != nil {
		return 0, err
	}
	if m := droppedRE.FindStringSubmatch(c.proc.Tail(5)); m != nil {
		dropped, _ = strconv.Atoi(m[1])
	}
	return dropped, nil
}

var (
	capturedRE = regexp.MustCompile(`(\d+) packets? captured`)
	receivedRE = regexp.MustCompile(`(\d+) packets? received by filter`)
)

// Sync waits, at most timeout, until tcpdump has written the packets its
// filter accepted so far: it sends SIGUSR1, on which tcpdump logs its
// counters, until "captured" reaches "received by filter" (or, where the
// two differ for good, as on lo, where libpcap drops the outgoing copy of
// every packet, until "captured" stops growing).
func (c *Capture) Sync(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last, stable := "", 0
	for {
		seen := len(capturedRE.FindAllString(c.tail(), -1))
		if err := c.proc.Signal(syscall.SIGUSR1); err != nil {
			return err
		}
		var caps, recs [][]string
		for {
			log := c.tail()
			caps, recs = capturedRE.FindAllStringSubmatch(log, -1), receivedRE.FindAllStringSubmatch(log, -1)
			if len(caps) > seen && len(recs) == len(caps) {
				break
			}
			if c.proc.Exited() {
				return fmt.Errorf("tcpdump in %s exited: %s", c.NS.Short, c.proc.Tail(5))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("tcpdump in %s did not report its counters in %v", c.NS.Short, timeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
		captured, received := caps[len(caps)-1][1], recs[len(recs)-1][1]
		if captured == received {
			return nil
		}
		if captured == last {
			if stable++; stable == 3 {
				return nil
			}
		} else {
			last, stable = captured, 0
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tcpdump in %s did not catch up in %v: %s of %s packets written", c.NS.Short, timeout, captured, received)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tail is the end of tcpdump's log, where its counters appear.
func (c *Capture) tail() string { return c.proc.Tail(1000) }

// Fields dissects the capture with tshark (an independent dissector) and
// returns the given fields of every packet matching the display filter.
func (c *Capture) Fields(ctx context.Context, displayFilter string, fields ...string) ([][]string, error) {
	argv := []string{"tshark", "-n", "-r", c.Path, "-T", "fields", "-E", "separator=/t"}
	if displayFilter != "" {
		argv = append(argv, "-Y", displayFilter)
	}
	for _, f := range fields {
		argv = append(argv, "-e", f)
	}
	out, err := c.NS.Output(ctx, argv...)
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		rows = append(rows, strings.Split(line, "\t"))
	}
	return rows, nil
}
