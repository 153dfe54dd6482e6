package api

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
)

// idleTarget is a data plane of two workers that never run: every
// capture finds nothing and ends at its duration.
type idleTarget struct{ armed [2]*pipeline.CaptureRing }

func (t *idleTarget) Workers() int                                    { return 2 }
func (t *idleTarget) ArmCapture(i int, r *pipeline.CaptureRing)       { t.armed[i] = r }
func (t *idleTarget) CaptureIdle(i int, r *pipeline.CaptureRing) bool { return t.armed[i] != r }

// TestCaptureAPI: starting a capture needs the token and a configured
// VIP (and backend); one runs at a time; DELETE ends it and disarms the
// workers; its pcap needs the token; without a data plane the routes 404.
func TestCaptureAPI(t *testing.T) {
	f := newFixture(t, testToken)
	if w := f.do("POST", "/api/v1/captures", `{"vip":"198.51.100.1"}`); w.Code != 404 {
		t.Errorf("no data plane: POST = %d, want 404", w.Code)
	}
	target := &idleTarget{}
	f.srv.opts.Captures = control.NewCaptures(target, zerolog.Nop())

	if w := f.do("POST", "/api/v1/captures", `{"vip":"198.51.100.1"}`, header("Authorization", "")); w.Code != 401 {
		t.Errorf("without the token: %d, want 401", w.Code)
	}
	w := f.do("POST", "/api/v1/captures", `{"vip":"198.51.100.9","backend":"192.0.2.99","count":0,"duration":"1h","snaplen":10}`)
	er := decodeJSON[v1.ErrorResponse](t, w)
	var fields []string
	for _, e := range er.Errors {
		fields = append(fields, e.Field)
	}
	if w.Code != 400 || strings.Join(fields, " ") != "vip duration snaplen" {
		t.Errorf("bad capture: %d %v: %s", w.Code, fields, w.Body)
	}
	if w := f.do("POST", "/api/v1/captures", `{"vip":"198.51.100.1","backend":"192.0.2.99"}`); w.Code != 400 || !strings.Contains(w.Body.String(), `"field":"backend"`) {
		t.Errorf("unknown backend: %d %s", w.Code, w.Body)
	}
	if w := f.do("POST", "/api/v1/captures", `{"vip":"198.51.100.1","count":100000,"snaplen":65535}`); w.Code != 400 || !strings.Contains(w.Body.String(), "64 MiB") {
		t.Errorf("too much memory: %d %s", w.Code, w.Body)
	}

	w = f.do("POST", "/api/v1/captures", `{"vip":"198.51.100.1","backend":"192.0.2.21","duration":"1m"}`)
	st := decodeJSON[v1.CaptureStatus](t, w)
	if w.Code != 201 || st.ID != "1" || st.State != "running" || st.Count != 1000 || st.SnapLen != 256 || st.Duration != "1m0s" {
		t.Fatalf("start = %d %s", w.Code, w.Body)
	}
	if target.armed[0] == nil || target.armed[1] == nil {
		t.Fatal("the workers were not armed")
	}
	if w := f.do("POST", "/api/v1/captures", `{"vip":"198.51.100.1"}`); w.Code != 409 {
		t.Errorf("second capture = %d, want 409", w.Code)
	}
	if w := f.do("GET", "/api/v1/captures/1", "", header("Authorization", "")); w.Code != 200 || decodeJSON[v1.CaptureStatus](t, w).State != "running" {
		t.Errorf("status = %d %s", w.Code, w.Body)
	}
	start := time.Now()
	w = f.do("DELETE", "/api/v1/captures/1", "")
	if st := decodeJSON[v1.CaptureStatus](t, w); w.Code != 200 || st.State != "done" || st.Reason != "stopped" || st.Ended == nil {
		t.Errorf("DELETE = %d %s", w.Code, w.Body)
	}
	if time.Since(start) > 2*time.Second || target.armed[0] != nil || target.armed[1] != nil {
		t.Errorf("stopping took %v; workers armed %v", time.Since(start), target.armed)
	}
	if w := f.do("GET", "/api/v1/captures/1/pcap", "", header("Authorization", "")); w.Code != 401 {
		t.Errorf("pcap without the token = %d, want 401", w.Code)
	}
	w = f.do("GET", "/api/v1/captures/1/pcap", "")
	if b := w.Body.Bytes(); w.Code != 200 || w.Header().Get("Content-Type") != "application/x-pcapng" || len(b) < 28 || string(b[:4]) != "\n\r\r\n" {
		t.Errorf("pcap = %d %q, %d bytes", w.Code, w.Header().Get("Content-Type"), len(b))
	}
	if w := f.do("GET", "/api/v1/captures/7", ""); w.Code != 404 {
		t.Errorf("unknown capture = %d, want 404", w.Code)
	}
}
