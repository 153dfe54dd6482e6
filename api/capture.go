package api

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
)

// Live capture: POST /api/v1/captures arms the workers, GET
// /api/v1/captures/ID tells how far it is, GET .../pcap waits for the end
// and returns the pcapng file, DELETE ends it early. Captured packets
// hold client data: starting, fetching and stopping need the token.

// captures returns the capture manager, answering 404 without one.
func (s *Server) captures(c *gin.Context) (*control.Captures, bool) {
	if s.opts.Captures == nil {
		s.fail(c, http.StatusNotFound, v1.CodeNotFound, "", "this daemon runs no data plane to capture from")
		return nil, false
	}
	return s.opts.Captures, true
}

func (s *Server) startCapture(c *gin.Context) {
	cs, ok := s.captures(c)
	if !ok {
		return
	}
	var req v1.CaptureRequest
	if !s.decode(c, &req) {
		return
	}
	cp, err := cs.Start(s.opts.Store.Snapshots().Load(), req)
	if err != nil {
		s.failErr(c, err)
		return
	}
	s.logChange(c, "")
	c.JSON(http.StatusCreated, cp.Status())
}

// capture returns the capture of the :id parameter, answering 404.
func (s *Server) capture(c *gin.Context) (*control.Capture, bool) {
	cs, ok := s.captures(c)
	if !ok {
		return nil, false
	}
	cp, err := cs.Get(c.Param("id"))
	if err != nil {
		s.failErr(c, err)
		return nil, false
	}
	return cp, true
}

func (s *Server) getCapture(c *gin.Context) {
	if cp, ok := s.capture(c); ok {
		c.JSON(http.StatusOK, cp.Status())
	}
}

func (s *Server) stopCapture(c *gin.Context) {
	cp, ok := s.capture(c)
	if !ok {
		return
	}
	cp.Stop()
	select {
	case <-cp.Done():
	case <-c.Request.Context().Done():
		return
	}
	s.logChange(c, "")
	c.JSON(http.StatusOK, cp.Status())
}

// capturePcap waits until the capture ends (or the client goes) and sends
// its pcapng file.
func (s *Server) capturePcap(c *gin.Context) {
	cp, ok := s.capture(c)
	if !ok {
		return
	}
	// The capture may run for minutes: the server's write timeout
	// starts when the file is ready.
	rc := http.NewResponseController(c.Writer)
	_ = rc.SetWriteDeadline(time.Time{})
	select {
	case <-cp.Done():
	case <-c.Request.Context().Done():
		return
	}
	_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
	c.Header("Content-Disposition", `attachment; filename="dsrlb-capture-`+cp.Status().ID+`.pcapng"`)
	c.Data(http.StatusOK, "application/x-pcapng", cp.Pcap())
}
