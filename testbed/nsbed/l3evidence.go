package nsbed

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// L3Evidence captures, while traffic runs, what proves L3 DSR on the wire:
// at the router's front link every envelope (IPIP or GRE) the appliance
// sends, checked header by header; on the appliance's NIC every TCP or UDP
// packet from a VIP (there must be none); at the client the SYN-ACKs and
// UDP answers from the VIPs (they must come from the router's MAC).
//
// The envelope capture sees every request packet, so keep it to moderate
// traffic (curl, UDP flows), not a wrk run.
type L3Evidence struct {
	l               *L3
	rtr, appl, clnt *Capture
}

// StartEvidence starts the three captures.
func (l *L3) StartEvidence() (*L3Evidence, error) {
	vips := "net " + L3VIPSubnet.String()
	r, err := l.Router.StartCapture("eth0", "ip proto 4 or ip proto 47", 128)
	if err != nil {
		return nil, err
	}
	a, err := l.Host("appl").StartCapture("eth0", "ip src "+vips+" and (tcp or udp) and "+notProbeAnswer, 96)
	if err != nil {
		return nil, err
	}
	c, err := l.Client.StartCapture("eth0", "ip src "+vips+" and (udp or tcp[tcpflags] & tcp-syn != 0)", 96)
	if err != nil {
		return nil, err
	}
	return &L3Evidence{l: l, rtr: r, appl: a, clnt: c}, nil
}

// EnvelopeTally counts the envelopes of one mode.
type EnvelopeTally struct {
	Frames int
	// ByBackend counts them by the backend of the outer destination.
	ByBackend map[string]int
	// WithOptions counts those whose inner header carries IPv4 options.
	WithOptions int
	// DF counts those with DF set (outer and inner alike).
	DF int
}

// L3Report is what the captures showed.
type L3Report struct {
	// Envelopes by mode ("ipip", "gre").
	Envelopes map[string]*EnvelopeTally
	// BadEnvelopes counts envelopes that break a rule; Bad describes the
	// first ten.
	BadEnvelopes int
	Bad          []string
	// Probes counts the envelopes of the appliance's health probes through
	// the VIP (inner packet from the appliance's address), checked like
	// the others but not tallied with the clients'.
	Probes int
	// ApplianceFromVIP counts TCP and UDP packets from a VIP on the
	// appliance's NIC (answers to its probes left out).
	ApplianceFromVIP int
	// ClientFromVIP counts SYN-ACKs and UDP answers from a VIP at the
	// client; FromRouter those of them sent by the router's MAC.
	ClientFromVIP, FromRouter int
	// CaptureDrops are packets the captures lost.
	CaptureDrops int
}

func (r *L3Report) bad(format string, args ...any) {
	r.BadEnvelopes++
	if len(r.Bad) < 10 {
		r.Bad = append(r.Bad, fmt.Sprintf(format, args...))
	}
}

// Finish stops the captures and dissects them with tshark. Every envelope
// must go from the appliance's MAC to the router's, from the appliance's
// address to a backend's, with TTL 64 and the inner packet's DF; IPIP
// (protocol 4) must carry a packet from the client to the ipip VIP, GRE
// (protocol 47, GRE protocol 0x0800) one to the gre VIP.
func (e *L3Evidence) Finish(ctx context.Context) (*L3Report, error) {
	r := &L3Report{Envelopes: map[string]*EnvelopeTally{}}
	for _, m := range e.l.Modes() {
		r.Envelopes[m] = &EnvelopeTally{ByBackend: map[string]int{}}
	}
	for _, c := range []*Capture{e.rtr, e.appl, e.clnt} {
		d, err := c.Stop()
		if err != nil {
			return nil, err
		}
		r.CaptureDrops += d
	}
	rows, err := e.rtr.Fields(ctx, "", "frame.number", "eth.src", "eth.dst", "ip.src", "ip.dst", "ip.proto",
		"ip.ttl", "ip.flags.df", "ip.hdr_len", "gre.proto")
	if err != nil {
		return nil, err
	}
	l := e.l
	byIP := l.Backends.ByIP()
	for _, row := range rows {
		if len(row) < 9 {
			r.bad("frame %v: too few fields", row)
			continue
		}
		f := func(i int) []string { return strings.Split(row[i], ",") }
		frame, src, dst, proto, ttl, df, hlen := row[0], f(3), f(4), f(5), f(6), f(7), f(8)
		gre := ""
		if len(row) > 9 {
			gre = row[9]
		}
		if len(src) != 2 || len(dst) != 2 || len(proto) != 2 || len(df) != 2 || len(hlen) != 2 {
			r.bad("frame %s: not one IPv4 packet inside another (ip.src %s)", frame, row[3])
			continue
		}
		var mode string
		switch {
		case proto[0] == "4":
			mode = "ipip"
		case proto[0] == "47" && gre == "0x0800":
			mode = "gre"
		default:
			r.bad("frame %s: outer protocol %s, GRE protocol %q", frame, proto[0], gre)
			continue
		}
		var why []string
		if row[1] != l.ApplianceMAC || row[2] != l.RouterMAC {
			why = append(why, fmt.Sprintf("Ethernet %s -> %s, want appliance %s -> router %s", row[1], row[2], l.ApplianceMAC, l.RouterMAC))
		}
		if src[0] != L3ApplianceIP.String() {
			why = append(why, "outer source "+src[0])
		}
		be := byIP[dst[0]]
		if be == "" {
			why = append(why, "outer destination "+dst[0]+" is no backend")
		}
		if ttl[0] != "64" {
			why = append(why, "outer TTL "+ttl[0])
		}
		if df[0] != df[1] {
			why = append(why, fmt.Sprintf("outer DF %s, inner %s", df[0], df[1]))
		}
		probe := src[1] == L3ApplianceIP.String()
		if (src[1] != L3ClientIP.String() && !probe) || dst[1] != L3VIP(mode).String() {
			why = append(why, fmt.Sprintf("inner %s -> %s, want client (or the appliance's probe) -> %s VIP %s", src[1], dst[1], mode, L3VIP(mode)))
		}
		t := r.Envelopes[mode]
		if t == nil {
			why = append(why, "no service of the bed uses "+mode)
		}
		if len(why) > 0 {
			r.bad("frame %s (%s): %s", frame, mode, strings.Join(why, "; "))
			continue
		}
		if probe {
			r.Probes++
			continue
		}
		t.Frames++
		t.ByBackend[be]++
		if hlen[1] != "20" {
			t.WithOptions++
		}
		if df[0] == "1" || df[0] == "True" {
			t.DF++
		}
	}
	if rows, err = e.appl.Fields(ctx, "", "frame.number"); err != nil {
		return nil, err
	}
	r.ApplianceFromVIP = len(rows)
	if rows, err = e.clnt.Fields(ctx, "", "eth.src"); err != nil {
		return nil, err
	}
	for _, row := range rows {
		r.ClientFromVIP++
		if row[0] == l.RouterMAC {
			r.FromRouter++
		}
	}
	return r, nil
}

// Problems lists what in r contradicts L3 DSR.
func (r *L3Report) Problems() []string {
	var p []string
	if r.BadEnvelopes != 0 {
		p = append(p, fmt.Sprintf("%d envelopes break the rules: %s", r.BadEnvelopes, strings.Join(r.Bad, " | ")))
	}
	for _, m := range slices.Sorted(maps.Keys(r.Envelopes)) {
		if r.Envelopes[m].Frames == 0 {
			p = append(p, "the router received no "+m+" envelope")
		}
	}
	if r.ApplianceFromVIP != 0 {
		p = append(p, fmt.Sprintf("%d TCP/UDP packets from a VIP crossed the appliance's NIC", r.ApplianceFromVIP))
	}
	if r.ClientFromVIP == 0 {
		p = append(p, "the client capture saw no answer from a VIP")
	}
	if r.FromRouter != r.ClientFromVIP {
		p = append(p, fmt.Sprintf("%d of %d answers from a VIP reached the client from another MAC than the router's",
			r.ClientFromVIP-r.FromRouter, r.ClientFromVIP))
	}
	if r.CaptureDrops != 0 {
		p = append(p, fmt.Sprintf("captures dropped %d packets", r.CaptureDrops))
	}
	return p
}
