package api

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
)

func (s *Server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok", "generation": s.opts.Store.Generation()})
}

func (s *Server) listServices(c *gin.Context) {
	svcs := s.opts.Store.Config().Services
	if svcs == nil {
		svcs = []v1.Service{}
	}
	c.JSON(http.StatusOK, v1.ServiceList{Services: svcs})
}

func (s *Server) getService(c *gin.Context) {
	svc, err := s.opts.Store.Config().Service(c.Param("name"))
	if err != nil {
		s.failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, svc)
}

// serviceResult answers with the stored service name.
func serviceResult(name string) func(*control.Config) any {
	return func(cfg *control.Config) any {
		svc, _ := cfg.Service(name)
		return svc
	}
}

func (s *Server) createService(c *gin.Context) {
	var svc v1.Service
	if !s.decode(c, &svc) {
		return
	}
	c.Set(keyService, svc.Name)
	s.commit(c, http.StatusCreated, func(cfg *control.Config) error { return cfg.AddService(svc) }, serviceResult(svc.Name))
}

// replaceServices replaces every service at once: all of the body's
// services take effect together or, if any is invalid, none does.
func (s *Server) replaceServices(c *gin.Context) {
	var list v1.ServiceList
	if !s.decode(c, &list) {
		return
	}
	c.Set(keyDetail, fmt.Sprintf("%d services", len(list.Services)))
	s.commit(c, http.StatusOK, func(cfg *control.Config) error { return cfg.ReplaceServices(list.Services) },
		func(cfg *control.Config) any {
			out := v1.ServiceList{Services: cfg.Services}
			if out.Services == nil {
				out.Services = []v1.Service{}
			}
			return out
		})
}

func (s *Server) replaceService(c *gin.Context) {
	var svc v1.Service
	if !s.decode(c, &svc) {
		return
	}
	name := c.Param("name")
	if svc.Name == "" {
		svc.Name = name
	}
	if svc.Name != name {
		s.fail(c, http.StatusBadRequest, v1.CodeValidation, "name",
			fmt.Sprintf("name %q in the body does not match %q in the path (renaming is delete and create)", svc.Name, name))
		return
	}
	s.commit(c, http.StatusOK, func(cfg *control.Config) error { return cfg.ReplaceService(svc) }, serviceResult(name))
}

func (s *Server) deleteService(c *gin.Context) {
	name := c.Param("name")
	s.commit(c, http.StatusNoContent, func(cfg *control.Config) error { return cfg.RemoveService(name) }, nil)
}

func (s *Server) createBackend(c *gin.Context) {
	var b v1.Backend
	if !s.decode(c, &b) {
		return
	}
	c.Set(keyBackend, b.IP)
	name := c.Param("name")
	s.commit(c, http.StatusCreated, func(cfg *control.Config) error { return cfg.AddBackend(name, b) },
		func(*control.Config) any { return b })
}

// pathIP parses the :ip path parameter, answering 400 when it is bad.
func (s *Server) pathIP(c *gin.Context) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(c.Param("ip"))
	if err != nil {
		s.fail(c, http.StatusBadRequest, v1.CodeInvalidPath, "ip", fmt.Sprintf("not an IP address: %q", c.Param("ip")))
		return netip.Addr{}, false
	}
	return ip, true
}

func (s *Server) patchBackend(c *gin.Context) {
	ip, ok := s.pathIP(c)
	if !ok {
		return
	}
	var p v1.BackendPatch
	if !s.decode(c, &p) {
		return
	}
	if p.Weight == nil && p.State == nil {
		s.fail(c, http.StatusBadRequest, v1.CodeValidation, "", `set "weight" and/or "state"`)
		return
	}
	var set []string
	if p.Weight != nil {
		set = append(set, fmt.Sprintf("weight %d", *p.Weight))
	}
	if p.State != nil {
		set = append(set, "state "+*p.State)
	}
	c.Set(keyDetail, strings.Join(set, ", "))
	name := c.Param("name")
	var out v1.Backend
	s.commit(c, http.StatusOK, func(cfg *control.Config) (err error) {
		out, err = cfg.PatchBackend(name, ip, p)
		return err
	}, func(*control.Config) any { return out })
}

func (s *Server) deleteBackend(c *gin.Context) {
	ip, ok := s.pathIP(c)
	if !ok {
		return
	}
	name := c.Param("name")
	s.commit(c, http.StatusNoContent, func(cfg *control.Config) error { return cfg.RemoveBackend(name, ip) }, nil)
}

// counters returns the per-worker counters and their sum.
func (s *Server) counters() ([]pipeline.Counters, pipeline.Counters) {
	var per []pipeline.Counters
	if s.opts.Stats != nil {
		per = s.opts.Stats.Counters()
	}
	var sum pipeline.Counters
	for i := range per {
		sum.Add(&per[i])
	}
	return per, sum
}

func (s *Server) status(c *gin.Context) {
	t := s.opts.Store.Typed()
	snap := s.opts.Store.Snapshots().Load()
	_, sum := s.counters()
	st := v1.Status{Generation: snap.Generation, Services: make([]v1.ServiceStatus, 0, len(t.Services)), BGP: []v1.BGPSession{}}
	if s.opts.BGP != nil {
		st.BGP = s.opts.BGP.BGPPeers()
	}
	for i := range t.Services {
		ts := &t.Services[i]
		ss := v1.ServiceStatus{
			Name: ts.Name, VIP: ts.VIP.String(), Protocol: control.ProtoName(ts.Proto), Port: int(ts.Port),
			Mode: ts.Mode.String(), MinHealthy: ts.MinHealthy, Reason: "no BGP speaker",
			Backends: make([]v1.BackendStatus, 0, len(ts.Backends)),
		}
		if s.opts.Announcer != nil {
			ss.Announced, ss.Reason = s.opts.Announcer.Status(ts.VIP)
		}
		psvc := snap.FindService(ts.Name)
		for _, tb := range ts.Backends {
			bs := v1.BackendStatus{IP: tb.IP.String(), Weight: tb.Weight, State: tb.State.String(), Forwarding: "pending",
				Health: s.health(ts, tb.IP)}
			s.probe(ts, tb.IP, &bs)
			if hop, mac := t.NextHopMAC(tb, s.opts.Neighbors); hop.IsValid() {
				bs.NextHop = hop.String()
				if !mac.IsZero() {
					bs.NextHopMAC = mac.String()
				}
			}
			if psvc != nil {
				if j := psvc.BackendByAddr(tb.IP); j >= 0 {
					pb := &psvc.Backends[j]
					bs.Forwarding = pb.State.String()
					bs.NewFlows = sum.Backend(pb.ID).NewFlows
					if pb.State == pipeline.BackendActive {
						ss.Usable++
					}
				}
			}
			if ph, ok := s.opts.Health.(passiveHolds); ok {
				if reason, until, held := ph.PassiveHold(ts.Name, tb.IP); held {
					bs.Passive, bs.HeldUntil = reason, &until
				}
			}
			ss.Backends = append(ss.Backends, bs)
		}
		st.Services = append(st.Services, ss)
	}
	c.JSON(http.StatusOK, st)
}

// passiveHolds says why and until when passive detection holds a backend
// down (*health.Monitors is one).
type passiveHolds interface {
	PassiveHold(service string, backend netip.Addr) (reason string, until time.Time, held bool)
}

func (s *Server) health(ts *control.TypedService, ip netip.Addr) string {
	switch {
	case ts.Health == nil:
		return "unchecked"
	case s.opts.Health == nil:
		return "unknown"
	case s.opts.Health.Healthy(ts.Name, ip):
		return "healthy"
	}
	return "unhealthy"
}

// probe fills in how the backend at ip of ts is probed and, while it is
// unhealthy, why.
func (s *Server) probe(ts *control.TypedService, ip netip.Addr, bs *v1.BackendStatus) {
	if ts.Health == nil {
		return
	}
	bs.Probe = &v1.BackendProbe{Type: ts.Health.Type.String(), Via: ts.Health.ProbesVia().String(), Target: ts.Health.Target(ip)}
	pr, ok := s.opts.Health.(ProbeResults)
	if !ok {
		return
	}
	result, reason, ok := pr.LastProbe(ts.Name, ip)
	if !ok {
		return
	}
	bs.Probe.LastResult = result
	if bs.Health == "unhealthy" {
		bs.HealthReason = reason
		if reason == "" && result != "" {
			bs.HealthReason = "no verdict yet: last probe " + result
		}
		if result == "" {
			bs.HealthReason = "no probe yet"
		}
	}
}

func (s *Server) stats(c *gin.Context) {
	per, _ := s.counters()
	st := control.BuildStats(s.opts.Store.Snapshots().Load(), per)
	acc, rej := s.opts.Store.Changes()
	st.Changes = &v1.Changes{Accepted: acc, Rejected: rej}
	c.JSON(http.StatusOK, st)
}
