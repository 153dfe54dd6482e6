package api

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// sseKeepAlive is how often an idle event stream gets a comment line, so
// proxies and clients see the connection alive.
const sseKeepAlive = 15 * time.Second

// sseWriteTimeout bounds each write of an event stream; a client that
// reads nothing for that long is disconnected.
const sseWriteTimeout = 30 * time.Second

// events answers GET /api/v1/events: the kept history after ?since=SEQ
// (all of it without), or, with Accept: text/event-stream or ?follow=1, a
// server-sent-event stream of the events after ?since (or Last-Event-ID),
// or of the new ones only when neither is given.
func (s *Server) events(c *gin.Context) {
	since, ok := s.eventsSince(c)
	if !ok {
		return
	}
	if !wantsStream(c) {
		evs := s.opts.Events.Since(since)
		if evs == nil {
			evs = []v1.Event{}
		}
		c.JSON(http.StatusOK, v1.EventList{Events: evs})
		return
	}
	if c.Query("since") == "" && c.GetHeader("Last-Event-ID") == "" {
		since = s.opts.Events.Last()
	}
	s.streamEvents(c, since)
}

// eventsSince parses ?since or, for a reconnecting stream, Last-Event-ID.
func (s *Server) eventsSince(c *gin.Context) (uint64, bool) {
	raw, field := c.Query("since"), "since"
	if raw == "" {
		raw, field = c.GetHeader("Last-Event-ID"), "Last-Event-ID"
	}
	if raw == "" {
		return 0, true
	}
	n, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		s.fail(c, http.StatusBadRequest, v1.CodeInvalidPath, field, fmt.Sprintf("not a sequence number: %q", raw))
		return 0, false
	}
	return n, true
}

func wantsStream(c *gin.Context) bool {
	if f := c.Query("follow"); f == "1" || f == "true" {
		return true
	}
	return strings.Contains(c.GetHeader("Accept"), "text/event-stream")
}

// streamEvents writes the events after since, then every new one, as
// server-sent events (id: SEQ, event: KIND, data: the Event as JSON) until
// the client goes or the server shuts down. It never holds up the bus: a
// client too slow for the history misses events and sees the gap in id.
func (s *Server) streamEvents(c *gin.Context, since uint64) {
	wake, stop := s.opts.Events.Subscribe()
	defer stop()
	rc := http.NewResponseController(c.Writer)
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	c.Status(http.StatusOK)
	write := func(f func() error) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
		if err := f(); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// The first write sends the headers at once: a client knows it is
	// subscribed before any event happens.
	if !write(func() error { _, err := fmt.Fprint(c.Writer, ": dsrlb events\n\n"); return err }) {
		return
	}
	tick := time.NewTicker(sseKeepAlive)
	defer tick.Stop()
	ctx := c.Request.Context()
	for {
		for _, ev := range s.opts.Events.Since(since) {
			if !write(func() error { return writeSSE(c.Writer, ev) }) {
				return
			}
			since = ev.Seq
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
			if !write(func() error { _, err := fmt.Fprint(c.Writer, ": keep-alive\n\n"); return err }) {
				return
			}
		}
	}
}

// writeSSE writes ev as one server-sent event.
func writeSSE(w http.ResponseWriter, ev v1.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Kind, b)
	return err
}

// changeReasons says in words what each change route did.
var changeReasons = map[string]string{
	"service_create":   "service created",
	"services_replace": "every service replaced",
	"service_replace":  "service replaced",
	"service_delete":   "service deleted",
	"backend_create":   "backend added",
	"backend_update":   "backend changed",
	"backend_delete":   "backend removed",
}

// publishChange publishes an accepted change as a config event: the object
// it touched, what was set (keyDetail) and by whom (the client's address;
// the API has one token, so no user name).
func (s *Server) publishChange(c *gin.Context) {
	event := c.GetString(keyEvent)
	object := "services"
	if svc := changed(c, keyService, "name"); svc != "" {
		object = "service " + svc
		if b := changed(c, keyBackend, "ip"); b != "" {
			object += "/backend " + b
		}
	}
	reason := cmp.Or(changeReasons[event], event)
	data := map[string]string{"change": event, "source": "api", "by": c.ClientIP()}
	if d := c.GetString(keyDetail); d != "" {
		reason += ": " + d
		data["detail"] = d
	}
	s.opts.Events.Publish(v1.EventConfig, object, reason+" (API, from "+c.ClientIP()+")", data)
}
