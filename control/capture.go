package control

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
)

// CaptureTarget is the data plane a capture arms: its workers
// (pipeline.Worker.ArmCapture, CaptureIdle).
type CaptureTarget interface {
	Workers() int
	ArmCapture(worker int, r *pipeline.CaptureRing)
	CaptureIdle(worker int, r *pipeline.CaptureRing) bool
}

// Capture bounds and defaults.
const (
	DefaultCaptureCount    = 1000
	MaxCaptureCount        = 100000
	DefaultCaptureDuration = 10 * time.Second
	MaxCaptureDuration     = 10 * time.Minute
	DefaultCaptureSnapLen  = 256
	// MaxCaptureBytes bounds count × snaplen: the pcap is kept in memory.
	MaxCaptureBytes = 64 << 20
	// captureRingBytes bounds each worker's ring, captureRingSlots its
	// records: at the defaults 65536 records of 256 bytes each way, 32 MiB
	// per worker for the capture's length, seconds of a busy VIP's packets
	// should the drain be held up (a loaded control plane core).
	captureRingBytes = 32 << 20
	captureRingSlots = 65536
	// captureDrainEvery is how often control empties the rings.
	captureDrainEvery = 5 * time.Millisecond
	// captureIdleWait bounds the wait for a worker to let go of its ring.
	captureIdleWait = time.Second
)

// Captures runs live captures on a data plane, one at a time, and keeps
// the last one's pcap.
type Captures struct {
	target CaptureTarget
	log    zerolog.Logger
	mu     sync.Mutex
	cur    *Capture
	n      int
}

// NewCaptures returns the capture manager of target.
func NewCaptures(target CaptureTarget, log zerolog.Logger) *Captures {
	return &Captures{target: target, log: log}
}

// Capture is one live capture.
type Capture struct {
	st     v1.CaptureStatus
	vip    string
	rings  []*pipeline.CaptureRing
	target CaptureTarget
	log    zerolog.Logger
	limit  time.Duration

	mu   sync.Mutex // guards st and pcap after start
	pcap bytes.Buffer
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

// Start checks req against snap (the VIP and backend must be configured),
// arms every worker and starts draining. ErrConflict while another capture
// runs; FieldErrors for a bad request.
func (cs *Captures) Start(snap *pipeline.Snapshot, req v1.CaptureRequest) (*Capture, error) {
	f, st, limit, err := captureFilter(snap, req)
	if err != nil {
		return nil, err
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.cur != nil && cs.cur.running() {
		return nil, conflict("", "capture %s is running (DELETE it or wait until it ends)", cs.cur.st.ID)
	}
	cs.n++
	st.ID = strconv.Itoa(cs.n)
	st.State = v1.CaptureRunning
	st.Started = time.Now().UTC()
	c := &Capture{st: st, target: cs.target, log: cs.log, limit: limit, stop: make(chan struct{}), done: make(chan struct{})}
	slots := min(captureRingSlots, max(pipeline.NewCaptureRingMin, captureRingBytes/(2*st.SnapLen)), max(pipeline.NewCaptureRingMin, st.Count))
	w, err := pcap.NewNGWriter(&c.pcap, st.SnapLen, "received", "sent")
	if err != nil {
		return nil, err
	}
	for i := range cs.target.Workers() {
		r := pipeline.NewCaptureRing(f, slots, st.SnapLen)
		c.rings = append(c.rings, r)
		cs.target.ArmCapture(i, r)
	}
	cs.cur = c
	cs.log.Info().Str("event", "capture_start").Str("id", st.ID).Str("vip", st.VIP).Str("backend", st.Backend).
		Int("count", st.Count).Str("duration", st.Duration).Msg("live capture armed")
	go c.run(w)
	return c, nil
}

// Get returns the capture with id; ErrNotFound unless it is the last one.
func (cs *Captures) Get(id string) (*Capture, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.cur == nil || cs.cur.st.ID != id {
		return nil, notFound("capture %q", id)
	}
	return cs.cur, nil
}

// captureFilter checks req and returns the workers' filter, the status to
// start with and the duration.
func captureFilter(snap *pipeline.Snapshot, req v1.CaptureRequest) (pipeline.CaptureFilter, v1.CaptureStatus, time.Duration, error) {
	var errs errList
	st := v1.CaptureStatus{VIP: req.VIP, Backend: req.Backend, Count: req.Count, SnapLen: req.SnapLen}
	var f pipeline.CaptureFilter
	vip, err := netip.ParseAddr(req.VIP)
	var svcs []*pipeline.Service
	if err != nil || vip.Is4In6() || vip.Zone() != "" {
		errs.add(rootField("vip"), "want an IPv4 or IPv6 address, got %q", req.VIP)
	} else {
		f.VIP = vip
		for i := range snap.Services {
			if snap.Services[i].VIPAddr == vip {
				svcs = append(svcs, &snap.Services[i])
			}
		}
		if len(svcs) == 0 {
			errs.add(rootField("vip"), "no service has VIP %v", vip)
		}
	}
	if req.Backend != "" {
		ip, err := netip.ParseAddr(req.Backend)
		found := false
		for _, svc := range svcs {
			for j := range svc.Backends {
				if b := &svc.Backends[j]; err == nil && b.Addr == ip {
					f.Backend, f.BackendMAC, found = ip, b.NextHopMAC(), true
				}
			}
		}
		if !found && len(svcs) > 0 {
			errs.add(rootField("backend"), "%q is not a backend of a service of VIP %s", req.Backend, req.VIP)
		}
	}
	if st.Count == 0 {
		st.Count = DefaultCaptureCount
	}
	if st.Count < 1 || st.Count > MaxCaptureCount {
		errs.add(rootField("count"), "must be 1..%d, got %d", MaxCaptureCount, st.Count)
	}
	limit := DefaultCaptureDuration
	if req.Duration != "" {
		d, err := time.ParseDuration(req.Duration)
		if err != nil || d <= 0 || d > MaxCaptureDuration {
			errs.add(rootField("duration"), "want a duration up to %v, got %q", MaxCaptureDuration, req.Duration)
		}
		limit = d
	}
	st.Duration = limit.String()
	if st.SnapLen == 0 {
		st.SnapLen = DefaultCaptureSnapLen
	}
	if st.SnapLen < 64 || st.SnapLen > 65535 {
		errs.add(rootField("snaplen"), "must be 64..65535, got %d", st.SnapLen)
	} else if st.Count*st.SnapLen > MaxCaptureBytes {
		errs.add(rootField("count"), "count × snaplen must be at most %d MiB, got %d × %d", MaxCaptureBytes>>20, st.Count, st.SnapLen)
	}
	return f, st, limit, errs.err()
}

// run drains the rings into the pcap until count packets, the duration or
// Stop, then disarms the workers, waits for each to let go of its ring and
// drains what is left.
func (c *Capture) run(w *pcap.NGWriter) {
	tick := time.NewTicker(captureDrainEvery)
	defer tick.Stop()
	deadline := time.NewTimer(c.limit)
	defer deadline.Stop()
	reason := ""
	for reason == "" {
		select {
		case <-tick.C:
		case <-deadline.C:
			reason = "duration elapsed"
		case <-c.stop:
			reason = "stopped"
		}
		if c.drain(w) {
			reason = "count reached"
		}
	}
	for i, r := range c.rings {
		c.target.ArmCapture(i, nil)
		until := time.Now().Add(captureIdleWait)
		for !c.target.CaptureIdle(i, r) && time.Now().Before(until) {
			time.Sleep(100 * time.Microsecond)
		}
	}
	c.drain(w)
	now := time.Now().UTC()
	c.mu.Lock()
	c.st.State, c.st.Ended, c.st.Reason = v1.CaptureDone, &now, reason
	st := c.st
	c.mu.Unlock()
	c.log.Info().Str("event", "capture_done").Str("id", st.ID).Int("packets", st.Packets).Uint64("lost", st.Lost).
		Str("reason", reason).Msg("live capture ended")
	close(c.done)
}

// drain writes what the rings hold, up to the count, and reports whether
// the count is reached.
func (c *Capture) drain(w *pcap.NGWriter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lost uint64
	for _, r := range c.rings {
		r.Drain(func(rec *pipeline.CaptureRecord) {
			if c.st.Packets >= c.st.Count {
				return
			}
			c.st.Packets++
			n := c.st.Packets
			verdict := ""
			switch {
			case rec.Segmented:
				verdict = "super-frame, segmented"
			case rec.Verdict == pipeline.VerdictTx:
				verdict = "forwarded"
			case rec.Verdict == pipeline.VerdictKernel:
				verdict = "to the kernel"
			case rec.Verdict == pipeline.VerdictDrop:
				verdict = "dropped"
			}
			// Writes to a bytes.Buffer do not fail.
			_ = w.Write(0, rec.Time, rec.In, rec.InLen, pcap.Inbound, fmt.Sprintf("pair %d received: %s", n, verdict))
			if rec.OutLen > 0 {
				_ = w.Write(1, rec.Time, rec.Out, rec.OutLen, pcap.Outbound, fmt.Sprintf("pair %d sent", n))
			}
		})
		lost += r.Lost()
	}
	c.st.Lost = lost
	return c.st.Packets >= c.st.Count
}

func (c *Capture) running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Status returns the capture's state.
func (c *Capture) Status() v1.CaptureStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Stop ends the capture early.
func (c *Capture) Stop() { c.once.Do(func() { close(c.stop) }) }

// Done is closed when the capture has ended.
func (c *Capture) Done() <-chan struct{} { return c.done }

// Pcap returns the pcapng file of a capture that has ended.
func (c *Capture) Pcap() []byte {
	<-c.done
	return c.pcap.Bytes()
}
