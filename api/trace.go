package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
)

// trace answers POST /api/v1/trace. It changes nothing, so it needs no
// token: it runs a packet through the workers' code on the published
// snapshot and asks the workers, between two bursts, for their flow table
// entry of its flow.
func (s *Server) trace(c *gin.Context) {
	var req v1.TraceRequest
	if !s.decode(c, &req) {
		return
	}
	res, err := control.Trace(s.opts.Store.Snapshots().Load(), s.opts.Store.Typed(), req, s.opts.Flows)
	if err != nil {
		s.failErr(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}
