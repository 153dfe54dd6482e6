package main

// dsrctl events: the appliance's event feed (GET /api/v1/events).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// events prints the kept events, or with -f streams them (server-sent
// events) until the stream ends or --count events were printed. A gap in
// the sequence numbers (the client fell behind, or history no longer held
// them) is reported on stderr.
func (c *apiCmd) events() error {
	if err := c.nargs(0, "events [-f] [--since SEQ] [--count N] [-o json]"); err != nil {
		return err
	}
	path := "/api/v1/events?since=" + strconv.FormatUint(c.since, 10)
	if !c.follow {
		var l v1.EventList
		raw, err := c.fetch(path, &l)
		if err != nil {
			return err
		}
		return c.show(raw, func(w io.Writer) {
			for _, ev := range l.Events {
				printEvent(w, ev)
			}
		})
	}
	req, err := http.NewRequest(http.MethodGet, c.api+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	// The stream has no end: the client's overall timeout would cut it.
	stream := *c.client
	stream.Timeout = 0
	resp, err := stream.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	last, n := c.since, uint64(0)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue // id:, event:, comments and blank lines: the data says it all
		}
		var ev v1.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("event stream: bad event %q: %w", data, err)
		}
		if last > 0 && ev.Seq > last+1 {
			fmt.Fprintf(c.errOut, "dsrctl events: %d events lost (%d..%d)\n", ev.Seq-last-1, last+1, ev.Seq-1)
		}
		last = ev.Seq
		if c.output == "json" {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(c.out, "%s\n", b)
		} else {
			printEvent(c.out, ev)
		}
		if n++; c.count > 0 && n >= c.count {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	return errors.New("event stream: the appliance closed it")
}

// printEvent writes one event as a line: time, seq, kind, object, reason.
func printEvent(w io.Writer, ev v1.Event) {
	fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", ev.Time.UTC().Format(time.RFC3339), ev.Seq, ev.Kind, ev.Object, ev.Reason)
}
