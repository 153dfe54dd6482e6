package e2e

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// TestICMPErrorLimit: a burst of full-sized UDP packets with DF from the
// client to the IPIP VIP (each 20 bytes too big for the envelope), many
// times the appliance's rate of ICMP errors, gets fragmentation needed for
// the rate's one second of bucket (and what the clock adds while the burst
// lasts); the rest are dropped as icmp_error_limit. tshark checks every
// error the client's interface saw.
func TestICMPErrorLimit(t *testing.T) {
	const rate, burst, chunk = 50, 600, 100
	l := startL3(t, nsbed.L3Options{Backends: 1, PeerOffloadsOff: true, Config: func(c *v1.Config) {
		r := rate
		c.Dataplane.ICMPErrorsPerSecond = &r
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clientMAC, err := l.Client.LinkMAC("eth0")
	if err != nil {
		t.Fatal(err)
	}
	src, err1 := net.ParseMAC(clientMAC)
	dst, err2 := net.ParseMAC(l.ApplianceMAC)
	if err1 != nil || err2 != nil {
		t.Fatalf("MACs %q %q: %v %v", clientMAC, l.ApplianceMAC, err1, err2)
	}
	vip := nsbed.L3VIP("ipip")
	frames := make([][]byte, burst)
	for i := range frames {
		frames[i] = testpkt.Packet{SrcMAC: [6]byte(src), DstMAC: [6]byte(dst), Src: nsbed.L3ClientIP, Dst: vip,
			Proto: pipeline.ProtoUDP, SrcPort: uint16(20000 + i), DstPort: nsbed.UDPPort, DF: true,
			Payload: make([]byte, l.MTU-pipeline.IPv4MinSize-8)}.Build()
	}
	capture, err := l.Client.StartCapture("eth0", "icmp", 256)
	if err != nil {
		t.Fatal(err)
	}
	sock, err := l.Client.OpenPacketSocket("eth0", nsbed.PacketSocketOptions{IgnoreOutgoing: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()

	// The burst goes in chunks the appliance's receive ring holds (512
	// frames in net_af_packet), each sent once the one before was seen:
	// answered or dropped as over the limit.
	before := mustStats(ctx, t, l.Appliance)
	start := time.Now()
	var d *nsbed.Stats
	for i, f := range frames {
		if err := sock.Send(f); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if (i+1)%chunk != 0 {
			continue
		}
		for {
			d = mustStats(ctx, t, l.Appliance).Sub(before)
			seen := d.Totals.FragNeededSent + d.Drops["icmp_error_limit"]
			if seen >= uint64(i+1) {
				break
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%d frames sent, the appliance saw %d (frag_needed_sent +%d, drops %v)", i+1, seen, d.Totals.FragNeededSent, d.NonZeroDrops())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	took := time.Since(start)
	answered, limited := d.Totals.FragNeededSent, d.Drops["icmp_error_limit"]
	// The bucket starts with one second of the rate and gains the rate
	// per second from the first frame to the last one the worker handled.
	most := rate + uint64(took.Seconds()*rate) + 1
	t.Logf("%d oversized frames sent and seen by the appliance in %v: fragmentation needed %d (bucket %d, at most %d), icmp_error_limit %d; drops %v",
		burst, took.Round(time.Millisecond), answered, rate, most, limited, d.NonZeroDrops())
	if answered+limited != burst {
		t.Fatalf("frag_needed_sent +%d and icmp_error_limit +%d, want %d in all", answered, limited, burst)
	}
	if answered < rate || answered > most {
		t.Errorf("frag_needed_sent +%d, want %d..%d", answered, rate, most)
	}
	if d.Totals.Dropped != limited {
		t.Errorf("drops %v, want only icmp_error_limit", d.NonZeroDrops())
	}

	if err := capture.Sync(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if dropped, err := capture.Stop(); err != nil || dropped != 0 {
		t.Fatalf("capture: %d dropped, %v", dropped, err)
	}
	// Each error: from the appliance's port address to the client,
	// fragmentation needed with the MTU less the IPIP envelope, a valid
	// checksum, quoting one of the burst's packets to the VIP.
	out, err := exec.Command("tshark", "-n", "-r", capture.Path, "-T", "fields", "-E", "separator=|",
		"-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-e", "icmp.code", "-e", "icmp.mtu", "-e", "icmp.checksum.status",
		"-e", "udp.dstport").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	want := strings.Join([]string{nsbed.L3ApplianceIP.String() + "," + nsbed.L3ClientIP.String(),
		nsbed.L3ClientIP.String() + "," + vip.String(), "3", "4", strconv.Itoa(l.MTU - nsbed.L3Overhead("ipip")), "1", strconv.Itoa(nsbed.UDPPort)}, "|")
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != want {
			t.Errorf("tshark: %q, want %q", line, want)
			continue
		}
		n++
	}
	if uint64(n) != answered {
		t.Errorf("the client's interface saw %d fragmentation needed, want the %d the appliance sent", n, answered)
	}
}
