package main

// dsrctl trace: what the data plane does with one packet (POST
// /api/v1/trace).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

func (c *apiCmd) trace() error {
	r := c.traceReq
	if len(c.args) != 0 || r.VIP == "" || r.Src == "" {
		return usageError("usage: dsrctl trace --vip V --proto tcp|udp --src IP:PORT --dport P [--flags syn,ack] [--port NAME] [--size N] [-o json]")
	}
	raw, err := c.call(http.MethodPost, "/api/v1/trace", r)
	if err != nil {
		return err
	}
	var res v1.TraceResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("POST /api/v1/trace: bad response: %w", err)
	}
	return c.show(raw, func(w io.Writer) { printTrace(w, res) })
}

// printTrace writes a trace as "field<TAB>value" lines.
func printTrace(w io.Writer, res v1.TraceResult) {
	line := func(k, format string, a ...any) { fmt.Fprintf(w, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	verdict := res.Verdict
	if res.DropReason != "" {
		verdict += " (" + res.DropReason + ")"
	}
	line("verdict", "%s", verdict)
	line("reason", "%s", res.Reason)
	if res.Service != "" {
		line("service", "%s (%s)", res.Service, res.Mode)
	}
	if res.Backend != "" {
		line("backend", "%s (by %s)", res.Backend, res.Decision)
	}
	if f := res.Flow; f != nil {
		s := fmt.Sprintf("worker %d holds it on %s, %s, expires in %.1fs", f.Worker, f.Backend, f.State, float64(f.ExpiresInMS)/1000)
		if f.Remapped {
			s += " (remapped: that backend no longer carries flows)"
		}
		line("flow", "%s", s)
	} else if res.Service != "" {
		line("flow", "no worker holds it (%d of %d workers answered)", res.WorkersAnswered, res.Workers)
	}
	if m := res.Maglev; m != nil {
		line("maglev", "hash %#08x, slot %d of %d: %s", m.Hash, m.Slot, m.TableSize, firstOf(m.Backend, "no backend takes new flows"))
	}
	if e := res.Envelope; e != nil {
		s := fmt.Sprintf("out of %s, %s > %s", e.EgressPort, e.SrcMAC, e.DstMAC)
		if e.NextHop != "" {
			s += " (next hop " + e.NextHop + ")"
		}
		if e.OuterDst != "" {
			s += fmt.Sprintf(", outer %s > %s proto %d", e.OuterSrc, e.OuterDst, e.OuterProto)
		}
		line("envelope", "%s, %d bytes", s, e.Length)
	}
	for i, b := range res.Backends {
		k := ""
		if i == 0 {
			k = "backends"
		}
		usable := "no new flows"
		if b.Usable {
			usable = "usable"
		}
		line(k, "%s weight %d %s, %s", b.IP, b.Weight, b.Forwarding, usable)
	}
}
