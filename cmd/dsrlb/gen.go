package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// genService is one VIP service the generator sends traffic to.
type genService struct {
	VIP   netip.Addr
	Proto uint8
	Port  uint16 // 0: every port (the generator varies the port)
}

// genDefaults are the IPv4 services of testbed/bench/bench.yaml, used without
// --config: l2 TCP/80, ipip UDP all ports, gre TCP/443.
var genDefaults = []genService{
	{netip.MustParseAddr("203.0.113.1"), pipeline.ProtoTCP, 80},
	{netip.MustParseAddr("203.0.113.2"), pipeline.ProtoUDP, 0},
	{netip.MustParseAddr("203.0.113.3"), pipeline.ProtoTCP, 443},
}

// IMIX frame sizes, Ethernet FCS included as on the wire (the capture holds
// each frame without its 4-byte FCS). imixPattern interleaves them 7:4:1
// ("simple IMIX"); its average is 353.8 bytes on the wire.
var imixPattern = [12]int{64, 570, 64, 64, 570, 64, 1518, 64, 570, 64, 64, 570}

const fcsLen = 4

// genOptions are the knobs of writeBenchCapture.
type genOptions struct {
	Flows    int
	Packets  int
	IMIX     bool
	Services []genService
	DstMAC   pipeline.MAC
}

// genFamily keeps the services of family ("4", "6" or "mixed": both) of
// svcs, or says why none is left.
func genFamily(svcs []genService, family string) ([]genService, error) {
	var out []genService
	for _, s := range svcs {
		if family == "mixed" || family == "4" && s.VIP.Is4() || family == "6" && s.VIP.Is6() {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("gen: no service of family %s", family)
	}
	return out, nil
}

// cmdGen writes a benchmark capture: TCP and UDP flows spread round-robin
// over the configured services of the chosen address family (--family),
// each frame 64 bytes (on the wire) or sized by the IMIX pattern; an IPv6
// frame is at least its headers (66 bytes on the wire for UDP, 78 for
// TCP). Packet k belongs to flow k mod flows, so a capture replayed in a
// loop revisits every flow once per flows packets; flow f goes to service
// f mod services.
func cmdGen(args []string) int {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	out := fs.String("out", "", "output pcap")
	flows := fs.Int("flows", 65536, "number of distinct flows (5-tuples)")
	sizes := fs.String("sizes", "64", "frame sizes: 64 or imix (64/570/1518 bytes 7:4:1)")
	packets := fs.Int("packets", 0, "packets in the capture (0: as many as flows)")
	cfgPath := fs.String("config", "", "take the VIP services (and destination MAC) from this config")
	family := fs.String("family", "4", "services by VIP family: 4, 6, or mixed (both, taking turns)")
	newLog := logFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLog()
	if *out == "" || *flows < 1 || (*sizes != "64" && *sizes != "imix") || *packets < 0 ||
		(*family != "4" && *family != "6" && *family != "mixed") {
		fmt.Fprintln(os.Stderr, "dsrlb gen: --out is required, --flows >= 1, --sizes 64|imix, --family 4|6|mixed")
		return 2
	}
	o := genOptions{Flows: *flows, Packets: *packets, IMIX: *sizes == "imix", Services: genDefaults,
		DstMAC: pipeline.MAC{0x02, 0, 0, 0, 0, 0x10}}
	if o.Packets == 0 {
		o.Packets = o.Flows
	}
	if *cfgPath != "" {
		cfg, err := control.LoadFile(*cfgPath)
		if err != nil {
			return fail(log, err)
		}
		t, err := cfg.Validate()
		if err != nil {
			return fail(log, err)
		}
		o.Services = nil
		for _, s := range t.Services {
			o.Services = append(o.Services, genService{VIP: s.VIP, Proto: s.Proto, Port: s.Port})
		}
		if len(o.Services) == 0 {
			return fail(log, errors.New("gen: the config has no services"))
		}
		if o.Services, err = genFamily(o.Services, *family); err != nil {
			return fail(log, err)
		}
		if len(t.Ports) > 0 && !t.Ports[0].MAC.IsZero() {
			o.DstMAC = t.Ports[0].MAC
		}
	} else if *family != "4" {
		return fail(log, errors.New("gen: --family 6 and mixed take their services from --config"))
	}
	n, bytes, err := writeBenchCapture(*out, o)
	if err != nil {
		return fail(log, err)
	}
	log.Info().Str("event", "capture_written").Str("path", *out).Int("packets", n).Int("flows", o.Flows).
		Int64("bytes", bytes).Msg("benchmark capture written")
	return 0
}

// genFlow returns the 5-tuple of flow i: clients from 198.18.0.0/15
// (RFC 2544 benchmarking addresses), or for an IPv6 service from
// 2001:2::/48 (RFC 5180), 2^17 addresses times source ports.
func genFlow(i int, svcs []genService) (src netip.Addr, sport, dport uint16, svc genService) {
	svc = svcs[i%len(svcs)]
	a := 198<<24 | 18<<16 | uint32(i&0x1ffff)
	src = netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
	if svc.VIP.Is6() {
		src = netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 14: byte(i >> 8), 15: byte(i), 13: byte(i>>16) & 1})
	}
	sport = uint16(1024 + (i>>17)%64000)
	dport = svc.Port
	if dport == 0 {
		dport = uint16(1 + (i*7919)%65535) // an all-ports service: spread ports
	}
	return src, sport, dport, svc
}

// writeBenchCapture writes the capture and returns its packet and byte counts.
func writeBenchCapture(path string, o genOptions) (int, int64, error) {
	w, err := pcap.Create(path)
	if err != nil {
		return 0, 0, err
	}
	var total int64
	client := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	for k := 0; k < o.Packets; k++ {
		f := k % o.Flows
		src, sport, dport, svc := genFlow(f, o.Services)
		wire := 64
		if o.IMIX {
			// Services take turns packet by packet; each one's own
			// packets walk the whole pattern.
			wire = imixPattern[(k/len(o.Services))%len(imixPattern)]
		}
		frameLen := wire - fcsLen
		p := testpkt.Packet{SrcMAC: client, DstMAC: o.DstMAC, Src: src, Dst: svc.VIP, Proto: svc.Proto,
			SrcPort: sport, DstPort: dport, DF: true, ID: uint16(k), TTL: 64}
		ipHdr := pipeline.IPv4MinSize
		if svc.VIP.Is6() {
			ipHdr = pipeline.IPv6HeaderSize
		}
		hdr := pipeline.EthernetMinSize + ipHdr + pipeline.UDPSize
		if svc.Proto == pipeline.ProtoTCP {
			hdr = pipeline.EthernetMinSize + ipHdr + pipeline.TCPMinSize
			p.TCPFlags = pipeline.TCPFlagACK
		}
		if frameLen > hdr {
			p.Payload = make([]byte, frameLen-hdr)
		}
		p.PadTo = frameLen
		b := p.Build()
		if err := w.Write(genTime(k), b); err != nil {
			w.Close()
			return 0, 0, err
		}
		total += int64(len(b))
	}
	return o.Packets, total, w.Close()
}

// genTime is the timestamp of packet k: one microsecond apart, as in
// pcap.WriteFile.
func genTime(k int) time.Time {
	return time.Unix(1700000000, 0).Add(time.Duration(k) * time.Microsecond)
}
