package nsbed

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
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
	argv := []string{"tcpdump", "-i", iface, "-n", "-U", "-Z", "root", "-s", strconv.Itoa(snaplen), "-w", c.Path}
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
// the kernel dropped before tcpdump could read them.
func (c *Capture) Stop() (dropped int, err error) {
	if err := c.proc.Stop(5 * time.Second); err != nil {
		return 0, err
	}
	if m := droppedRE.FindStringSubmatch(c.proc.Tail(5)); m != nil {
		dropped, _ = strconv.Atoi(m[1])
	}
	return dropped, nil
}

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
