// Package api is the dsrlb REST API: Gin handlers under /api/v1 that read
// and change the services of a control.Store, the live status and counters,
// Prometheus /metrics, /healthz and an OpenAPI 3 description of it all
// (/api/v1/openapi.json); the rates the web console graphs
// (/api/v1/rates, /api/v1/history) and the console itself at /, a page
// embedded in the binary that reads and changes only through this API.
//
// Security: reads (GET) are open; every change (POST, PUT, PATCH, DELETE)
// needs "Authorization: Bearer <token>". With no token configured the API
// is read-only and refuses changes with 403 (secure by default). The token
// is compared in constant time. The daemon binds the API to loopback unless
// api.listen says otherwise; the token travels in clear text, so expose it
// beyond the host only behind TLS.
//
// Every change goes through control.Store.Update, which validates the whole
// config, persists it atomically, compiles and publishes a new snapshot; a
// change is acknowledged only once Update returned nil, and a rejected one
// leaves the state untouched. Accepted and rejected changes are logged with
// the keys event, service, backend and reason.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
)

// MaxBodyBytes is the largest request body accepted (1 MiB); larger ones
// get 413.
const MaxBodyBytes = 1 << 20

// StatsSource returns the counters of every worker lcore, one entry per
// worker, in worker order. The API sums them on each request or scrape;
// the fast path keeps them per lcore.
type StatsSource interface {
	Counters() []pipeline.Counters
}

// HealthStatus tells whether a backend passes its service's health monitor.
// Every control.HealthView satisfies it.
type HealthStatus interface {
	Healthy(service string, backend netip.Addr) bool
}

// ProbeResults, when Options.Health has it (health.Monitors does), gives a
// backend's last probe result and, while probes fail, why in words an
// operator can act on.
type ProbeResults interface {
	LastProbe(service string, backend netip.Addr) (result, reason string, ok bool)
}

// Announcer tells whether BGP announces a VIP, and why (not).
type Announcer interface {
	Status(vip netip.Addr) (announced bool, reason string)
}

// BGPStatus reports the BGP sessions of the embedded speaker.
type BGPStatus interface {
	BGPPeers() []v1.BGPSession
}

// Options are the Server's configuration and dependencies.
type Options struct {
	// Store holds the live config; required.
	Store *control.Store
	// Token is the bearer token for changes, resolved by the caller from
	// api.token or DSRLB_API_TOKEN. Empty makes the API read-only.
	Token string
	// Stats, Health, Announcer and Neighbors may be nil: the status then
	// shows no counters, health "unknown", VIPs not announced and only
	// static next-hop MACs.
	Stats     StatsSource
	Health    HealthStatus
	Announcer Announcer
	Neighbors control.Neighbors
	// BGP may be nil: no sessions are shown.
	BGP BGPStatus
	// History may be nil: /api/v1/rates is then empty and
	// /api/v1/history answers 404.
	History *control.History
	// Events is the bus GET /api/v1/events serves and accepted changes
	// are published to; nil serves an empty history.
	Events *control.Events
	// Flows asks the workers for their flow table entries (POST
	// /api/v1/trace); nil traces as if no worker held the flow.
	Flows control.FlowLookup
	// Captures runs live captures (/api/v1/captures); nil answers 404.
	Captures *control.Captures
	Log      zerolog.Logger
}

// Server is the REST API. Build it with New.
type Server struct {
	opts     Options
	token    [sha256.Size]byte // hash of Options.Token, for constant-time compares
	handler  *gin.Engine
	registry *prometheus.Registry
}

// New returns the API server for o.
func New(o Options) *Server {
	s := &Server{opts: o, token: sha256.Sum256([]byte(o.Token))}
	s.registry = newRegistry(s)
	s.handler = s.routes()
	return s
}

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on listen (host:port) and serves until ctx is done, then
// shuts down gracefully.
func (s *Server) Run(ctx context.Context, listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done, then shuts down gracefully. It
// closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Requests end with ctx, so event streams let Shutdown finish.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	addr := ln.Addr().String()
	ev := s.opts.Log.Info()
	if ap, err := netip.ParseAddrPort(addr); err == nil && !ap.Addr().IsLoopback() {
		ev = s.opts.Log.Warn().Str("reason", "not loopback: the bearer token travels in clear text, use TLS in front")
	}
	ev.Str("event", "api_listening").Str("listen", addr).Bool("changes_enabled", s.opts.Token != "").Msg("REST API listening")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("api shutdown: %w", err)
	}
	return nil
}

// Gin context keys of a change, for its log line.
const (
	keyEvent   = "dsrlb.event"
	keyService = "dsrlb.service"
	keyBackend = "dsrlb.backend"
	keyDetail  = "dsrlb.detail" // what a change set, for its event
)

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	_ = r.SetTrustedProxies(nil) // log the peer, not X-Forwarded-For
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, func(c *gin.Context, err any) {
		s.opts.Log.Error().Str("event", "panic").Str("path", c.FullPath()).Interface("reason", err).Msg("API handler panicked")
		s.fail(c, http.StatusInternalServerError, v1.CodeInternal, "", "internal error")
	}))
	r.NoRoute(func(c *gin.Context) {
		s.fail(c, http.StatusNotFound, v1.CodeNotFound, "", "no route "+c.Request.URL.Path)
	})
	r.NoMethod(func(c *gin.Context) {
		s.fail(c, http.StatusMethodNotAllowed, v1.CodeMethodNotAllowed, "", "method "+c.Request.Method+" not allowed on "+c.Request.URL.Path)
	})
	r.GET("/healthz", s.healthz)
	r.GET("/metrics", gin.WrapH(metricsHandler(s.registry)))
	v1 := r.Group("/api/v1")
	v1.GET("/openapi.json", openAPI)
	v1.GET("/services", s.listServices)
	v1.POST("/services", s.change("service_create"), s.createService)
	v1.PUT("/services", s.change("services_replace"), s.replaceServices)
	v1.GET("/services/:name", s.getService)
	v1.PUT("/services/:name", s.change("service_replace"), s.replaceService)
	v1.DELETE("/services/:name", s.change("service_delete"), s.deleteService)
	v1.POST("/services/:name/backends", s.change("backend_create"), s.createBackend)
	v1.PATCH("/services/:name/backends/:ip", s.change("backend_update"), s.patchBackend)
	v1.DELETE("/services/:name/backends/:ip", s.change("backend_delete"), s.deleteBackend)
	v1.GET("/status", s.status)
	v1.GET("/stats", s.stats)
	v1.GET("/rates", s.rates)
	v1.GET("/history", s.history)
	r.GET("/", consoleFile("src/index.html", "text/html; charset=utf-8"))
	r.GET("/console/console.js", consoleFile("dist/console.js", "text/javascript; charset=utf-8"))
	r.GET("/console/console.css", consoleFile("dist/console.css", "text/css; charset=utf-8"))
	v1.GET("/events", s.events)
	v1.POST("/trace", s.trace)
	v1.POST("/captures", s.change("capture_start"), s.startCapture)
	v1.GET("/captures/:id", s.getCapture)
	v1.GET("/captures/:id/pcap", s.change("capture_fetch"), s.capturePcap)
	v1.DELETE("/captures/:id", s.change("capture_stop"), s.stopCapture)
	return r
}

// change marks a route as a change: it names the change for the log and
// requires the bearer token.
func (s *Server) change(event string) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Set(keyEvent, event)
		if s.opts.Token == "" {
			s.fail(c, http.StatusForbidden, v1.CodeForbidden, "",
				"changes are disabled: no API token is configured (set api.token in the config or DSRLB_API_TOKEN)")
			return
		}
		scheme, tok, _ := strings.Cut(c.GetHeader("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			c.Header("WWW-Authenticate", `Bearer realm="dsrlb"`)
			s.fail(c, http.StatusUnauthorized, v1.CodeUnauthorized, "", "missing bearer token (Authorization: Bearer <token>)")
			return
		}
		if h := sha256.Sum256([]byte(tok)); subtle.ConstantTimeCompare(h[:], s.token[:]) != 1 {
			c.Header("WWW-Authenticate", `Bearer realm="dsrlb", error="invalid_token"`)
			s.fail(c, http.StatusUnauthorized, v1.CodeUnauthorized, "", "invalid bearer token")
		}
	}
}

// fail aborts c with an error document, logging it when c is a change.
func (s *Server) fail(c *gin.Context, status int, code, field, msg string) {
	s.failAll(c, status, []v1.Error{{Code: code, Message: msg, Field: field}})
}

// failAll aborts c with a document of errs (at least one), logging it when
// c is a change.
func (s *Server) failAll(c *gin.Context, status int, errs []v1.Error) {
	reason := errs[0].Message
	if len(errs) > 1 {
		all := make([]string, len(errs))
		for i, e := range errs {
			all[i] = e.Field + ": " + e.Message
		}
		reason = strings.Join(all, "; ")
	}
	s.logChange(c, reason)
	c.AbortWithStatusJSON(status, v1.ErrorResponse{Error: errs[0], Errors: errs})
}

// failErr maps a control error to its status: ErrNotFound 404, ErrConflict
// 409, FieldErrors 400 with every error of the config, anything else
// (persistence) 500.
func (s *Server) failErr(c *gin.Context, err error) {
	fe, isField := control.AsFieldError(err)
	field, msg := "", err.Error()
	if isField {
		field, msg = fe.Field, fe.Message
	}
	switch {
	case errors.Is(err, control.ErrNotFound):
		s.fail(c, http.StatusNotFound, v1.CodeNotFound, field, msg)
	case errors.Is(err, control.ErrConflict):
		s.fail(c, http.StatusConflict, v1.CodeConflict, field, msg)
	case isField:
		var errs []v1.Error
		for _, fe := range control.AllFieldErrors(err) {
			errs = append(errs, v1.Error{Code: v1.CodeValidation, Message: fe.Message, Field: fe.Field})
		}
		s.failAll(c, http.StatusBadRequest, errs)
	default:
		s.fail(c, http.StatusInternalServerError, v1.CodeInternal, "", msg)
	}
}

// logChange logs an accepted (reason "") or rejected change; reads are not
// logged.
func (s *Server) logChange(c *gin.Context, reason string) {
	event := c.GetString(keyEvent)
	if event == "" {
		return
	}
	e, msg := s.opts.Log.Info(), "change accepted"
	if reason != "" {
		e, msg = s.opts.Log.Warn().Str("reason", reason), "change rejected"
	}
	e.Str("event", event).Str("service", changed(c, keyService, "name")).Str("backend", changed(c, keyBackend, "ip")).
		Str("remote", c.ClientIP()).Msg(msg)
}

// changed returns what a change touched: the value the handler set under
// key, else the path parameter param.
func changed(c *gin.Context, key, param string) string {
	if v := c.GetString(key); v != "" {
		return v
	}
	return c.Param(param)
}

// decode reads a JSON body strictly into v: application/json only, at most
// MaxBodyBytes, no unknown fields, nothing after the value. On failure it
// answers and returns false.
func (s *Server) decode(c *gin.Context, v any) bool {
	if mt, _, err := mime.ParseMediaType(c.GetHeader("Content-Type")); err != nil || mt != "application/json" {
		s.fail(c, http.StatusUnsupportedMediaType, v1.CodeMediaType, "", "Content-Type must be application/json")
		return false
	}
	tooLarge := fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)
	if c.Request.ContentLength > MaxBodyBytes {
		s.fail(c, http.StatusRequestEntityTooLarge, v1.CodeTooLarge, "", tooLarge)
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("unexpected data after the JSON value")
	}
	var (
		tooBig  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		s.fail(c, http.StatusRequestEntityTooLarge, v1.CodeTooLarge, "", tooLarge)
	case errors.Is(err, io.EOF):
		s.fail(c, http.StatusBadRequest, v1.CodeInvalidJSON, "", "request body is empty")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		s.fail(c, http.StatusBadRequest, v1.CodeUnknownField, field, "unknown field "+field)
	case errors.As(err, &typeErr):
		s.fail(c, http.StatusBadRequest, v1.CodeInvalidJSON, typeErr.Field,
			fmt.Sprintf("field %s: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value))
	default:
		s.fail(c, http.StatusBadRequest, v1.CodeInvalidJSON, "", "invalid JSON: "+err.Error())
	}
	return false
}

// commit runs change through Store.Update. On success it answers status
// with result (evaluated on the accepted config; nil means no body) and
// logs; on error the store is unchanged and the error is mapped by failErr.
func (s *Server) commit(c *gin.Context, status int, change func(*control.Config) error, result func(*control.Config) any) {
	var out any
	err := s.opts.Store.Update(func(cfg *control.Config) error {
		if err := change(cfg); err != nil {
			return err
		}
		if result != nil {
			out = result(cfg)
		}
		return nil
	})
	if err != nil {
		s.failErr(c, err)
		return
	}
	s.logChange(c, "")
	s.publishChange(c)
	if out == nil {
		c.Status(status)
		return
	}
	c.JSON(status, out)
}
