package api

import (
	"embed"
	"net/http"
	"net/netip"

	"github.com/gin-gonic/gin"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
)

// consoleFiles is the web console: its page as written, and its script
// and style sheet as `make console` bundles them (esbuild) from
// console/src into console/dist, which is committed so that `go build`
// needs no npm.
//
//go:embed console/src/index.html console/dist/console.js console/dist/console.css
var consoleFiles embed.FS

// consoleCSP keeps the console to its own origin: every script, style,
// image and request comes from the API that served it.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// consoleFile answers with the embedded file path of the console.
func consoleFile(path, contentType string) gin.HandlerFunc {
	body, err := consoleFiles.ReadFile("console/" + path)
	if err != nil {
		panic("api: console file missing from the embed: " + path) // the embed pattern names it
	}
	return func(c *gin.Context) {
		c.Header("Content-Security-Policy", consoleCSP)
		c.Header("X-Content-Type-Options", "nosniff")
		c.Header("Cache-Control", "no-cache")
		c.Data(http.StatusOK, contentType, body)
	}
}

// rates answers with the rates of the last sampling interval (empty
// without a History).
func (s *Server) rates(c *gin.Context) {
	if s.opts.History == nil {
		c.JSON(http.StatusOK, v1.Rates{Services: []v1.ServiceRates{}})
		return
	}
	c.JSON(http.StatusOK, s.opts.History.Rates())
}

// history answers with the rates over time of the appliance, of
// ?service=NAME, or of ?service=NAME&backend=IP.
func (s *Server) history(c *gin.Context) {
	svc, be := c.Query("service"), c.Query("backend")
	object := control.HistoryAppliance
	switch {
	case be != "" && svc == "":
		s.fail(c, http.StatusBadRequest, v1.CodeValidation, "service", "backend needs service")
		return
	case be != "":
		object = control.HistoryBackend(svc, be)
	case svc != "":
		object = control.HistoryService(svc)
	}
	if s.opts.History == nil {
		s.fail(c, http.StatusNotFound, v1.CodeNotFound, "", "no rate history is kept")
		return
	}
	h, ok := s.opts.History.Series(object)
	if !ok && !s.configured(svc, be) {
		s.fail(c, http.StatusNotFound, v1.CodeNotFound, "", "no history of "+object+" in the last "+control.HistoryWindow.String())
		return
	}
	if !ok { // configured, not sampled yet
		h = v1.History{Object: object, IntervalSeconds: s.opts.History.Interval().Seconds(), Times: []int64{}, Series: []v1.Series{}}
	}
	c.JSON(http.StatusOK, h)
}

// configured tells whether the config has service svc ("" for the
// appliance) and, unless be is "", its backend be.
func (s *Server) configured(svc, be string) bool {
	if svc == "" {
		return true
	}
	cfg, err := s.opts.Store.Config().Service(svc)
	if err != nil {
		return false
	}
	if be == "" {
		return true
	}
	want, err := netip.ParseAddr(be)
	if err != nil {
		return false
	}
	for _, b := range cfg.Backends {
		if ip, err := netip.ParseAddr(b.IP); err == nil && ip == want {
			return true
		}
	}
	return false
}
