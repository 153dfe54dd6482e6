package main

// The REST API client commands: get, apply, delete, drain, stats.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// apiCommands are the API subcommands; each gets its parsed flags and
// positional arguments in c.
var apiCommands = map[string]func(c *apiCmd) error{
	"get":     (*apiCmd).get,
	"apply":   (*apiCmd).apply,
	"delete":  (*apiCmd).delete,
	"drain":   (*apiCmd).drain,
	"stats":   (*apiCmd).stats,
	"events":  (*apiCmd).events,
	"trace":   (*apiCmd).trace,
	"capture": (*apiCmd).capture,
}

func init() {
	for name := range apiCommands {
		commands[name] = func(args []string) int { return runAPI(name, args, os.Stdout, os.Stderr, os.Getenv) }
	}
}

// apiCmd is one API command invocation.
type apiCmd struct {
	args                     []string // positional arguments
	api, token, output, file string
	prune                    bool
	out, errOut              io.Writer
	client                   *http.Client
	// events: follow the stream, from after seq since, stop after count.
	follow       bool
	since, count uint64
	// trace: the packet to trace.
	traceReq v1.TraceRequest
	// capture: what to capture, and the file to write.
	captureReq v1.CaptureRequest
	pcapFile   string
}

// usageError is a bad command line (exit code 2).
type usageError string

func (e usageError) Error() string { return string(e) }

// apiError is an error document returned by the API.
type apiError struct {
	status int
	body   v1.Error   // the first error
	errs   []v1.Error // every error, body first
	// at returns where a field is in the file being applied, as
	// FILE:LINE, or ""; nil outside apply.
	at func(field string) string
}

// Error is one line for one error, else a line per error.
func (e *apiError) Error() string {
	where := func(field string) string {
		if e.at == nil || field == "" {
			return ""
		}
		return e.at(field)
	}
	if len(e.errs) <= 1 {
		msg := fmt.Sprintf("%d %s: %s", e.status, e.body.Code, e.body.Message)
		if e.body.Field != "" {
			msg += " (field " + e.body.Field + ")"
		}
		if at := where(e.body.Field); at != "" {
			msg += " at " + at
		}
		return msg
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s: %d errors:", e.status, e.body.Code, len(e.errs))
	for _, x := range e.errs {
		b.WriteString("\n  ")
		if at := where(x.Field); at != "" {
			b.WriteString(at + ": ")
		}
		if x.Field != "" {
			b.WriteString(x.Field + ": ")
		}
		b.WriteString(x.Message)
	}
	return b.String()
}

// runAPI runs API command name and returns its exit code: 0 ok, 1 API or
// transport error, 2 usage error.
func runAPI(name string, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &apiCmd{out: stdout, errOut: stderr, client: &http.Client{Timeout: 30 * time.Second}}
	fs := flag.NewFlagSet("dsrctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.api, "api", "", "API base URL (env DSRLB_API, default http://127.0.0.1:8080)")
	fs.StringVar(&c.token, "token", "", "bearer token for changes (env DSRLB_API_TOKEN)")
	fs.StringVar(&c.output, "o", "table", "output format: table or json")
	if name == "apply" {
		fs.StringVar(&c.file, "f", "", "YAML file with a services: list (a whole config file works; only services are applied)")
		fs.BoolVar(&c.prune, "prune", false, "delete services that are not in the file")
	}
	if name == "events" {
		fs.BoolVar(&c.follow, "f", false, "follow: print the kept events, then each new one as it happens")
		fs.Uint64Var(&c.since, "since", 0, "only events with a sequence number above this")
		fs.Uint64Var(&c.count, "count", 0, "with -f: exit after this many events (0: never)")
	}
	if name == "trace" {
		r := &c.traceReq
		fs.StringVar(&r.VIP, "vip", "", "destination VIP")
		fs.StringVar(&r.Protocol, "proto", "tcp", "tcp or udp")
		fs.StringVar(&r.Src, "src", "", "client IP:PORT")
		fs.IntVar(&r.DstPort, "dport", 0, "destination port")
		fs.StringVar(&r.Flags, "flags", "", "TCP flags, comma-separated: syn (default), ack, fin, rst, psh")
		fs.StringVar(&r.Port, "port", "", "receiving port (default the first)")
		fs.IntVar(&r.Size, "size", 0, "payload bytes (DF is set)")
	}
	if name == "capture" {
		r := &c.captureReq
		fs.StringVar(&r.VIP, "vip", "", "capture the packets to this VIP")
		fs.StringVar(&r.Backend, "backend", "", "only those sent to this backend")
		fs.IntVar(&r.Count, "count", 0, "stop after this many packets (default 1000)")
		fs.StringVar(&r.Duration, "duration", "", "stop after this long (default 10s)")
		fs.IntVar(&r.SnapLen, "snaplen", 0, "bytes kept per packet (default 256)")
		fs.StringVar(&c.pcapFile, "w", "", "write the capture (pcapng) to this file")
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // the flag package printed why
	}
	c.args = pos
	c.api = strings.TrimRight(firstOf(c.api, getenv("DSRLB_API"), "http://127.0.0.1:8080"), "/")
	c.token = firstOf(c.token, getenv("DSRLB_API_TOKEN"))
	if c.output != "table" && c.output != "json" {
		err = usageError(fmt.Sprintf("-o must be table or json, got %q", c.output))
	} else {
		err = apiCommands[name](c)
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "dsrctl %s: %v\n", name, err)
		fs.Usage()
		return 2
	default:
		fmt.Fprintf(stderr, "dsrctl %s: %v\n", name, err)
		return 1
	}
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// parseInterspersed parses flags anywhere among the positional arguments
// (dsrctl get service web -o json) and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// call sends a request to the API and returns the response body; error
// documents become *apiError.
func (c *apiCmd) call(method, path string, in any) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.api+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" && method != http.MethodGet {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		var er v1.ErrorResponse
		if json.Unmarshal(b, &er) == nil && er.Error.Code != "" {
			return nil, &apiError{status: resp.StatusCode, body: er.Error, errs: er.Errors}
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// fetch GETs path and decodes it into out, returning the raw body too.
func (c *apiCmd) fetch(path string, out any) ([]byte, error) {
	b, err := c.call(http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("GET %s: bad response: %w", path, err)
	}
	return b, nil
}

// show prints raw as indented JSON with -o json, else calls table on a
// tabwriter.
func (c *apiCmd) show(raw []byte, table func(w io.Writer)) error {
	if c.output == "json" {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := c.out.Write(buf.Bytes())
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func (c *apiCmd) nargs(n int, usage string) error {
	if len(c.args) != n {
		return usageError("usage: dsrctl " + usage)
	}
	return nil
}

func servicePath(name string) string { return "/api/v1/services/" + url.PathEscape(name) }

func backendPath(name, ip string) string {
	return servicePath(name) + "/backends/" + url.PathEscape(ip)
}

func (c *apiCmd) get() error {
	if len(c.args) == 0 {
		return usageError("usage: dsrctl get services|service NAME|status|stats")
	}
	what := c.args[0]
	c.args = c.args[1:]
	switch what {
	case "services":
		if err := c.nargs(0, "get services"); err != nil {
			return err
		}
		var l v1.ServiceList
		raw, err := c.fetch("/api/v1/services", &l)
		if err != nil {
			return err
		}
		return c.show(raw, func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tVIP\tPROTOCOL\tPORT\tMODE\tBACKENDS")
			for _, s := range l.Services {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", s.Name, s.VIP, s.Protocol, portName(s.Port), s.Mode, len(s.Backends))
			}
		})
	case "service":
		if err := c.nargs(1, "get service NAME"); err != nil {
			return err
		}
		var s v1.Service
		raw, err := c.fetch(servicePath(c.args[0]), &s)
		if err != nil {
			return err
		}
		return c.show(raw, func(w io.Writer) {
			fmt.Fprintf(w, "service %s: %s %s port %s, mode %s\n\n", s.Name, s.VIP, s.Protocol, portName(s.Port), s.Mode)
			fmt.Fprintln(w, "BACKEND\tWEIGHT\tSTATE\tMAC")
			for _, b := range s.Backends {
				weight := 1
				if b.Weight != nil {
					weight = *b.Weight
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", b.IP, weight, firstOf(b.State, "enabled"), firstOf(b.MAC, "-"))
			}
		})
	case "status":
		if err := c.nargs(0, "get status"); err != nil {
			return err
		}
		return c.status()
	case "stats":
		return c.stats()
	}
	return usageError(fmt.Sprintf("cannot get %q: want services, service NAME, status or stats", what))
}

func portName(p int) string {
	if p == 0 {
		return "all"
	}
	return fmt.Sprint(p)
}

func (c *apiCmd) status() error {
	var st v1.Status
	raw, err := c.fetch("/api/v1/status", &st)
	if err != nil {
		return err
	}
	return c.show(raw, func(w io.Writer) {
		fmt.Fprintln(w, "SERVICE\tVIP\tPROTOCOL\tPORT\tMODE\tUSABLE\tANNOUNCED\tREASON")
		for _, s := range st.Services {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%v\t%s\n", s.Name, s.VIP, s.Protocol, portName(s.Port), s.Mode,
				s.Usable, len(s.Backends), s.Announced, s.Reason)
		}
		fmt.Fprintln(w, "\nSERVICE\tBACKEND\tWEIGHT\tSTATE\tFORWARDING\tHEALTH\tNEXT-HOP\tMAC\tNEW-FLOWS")
		for _, s := range st.Services {
			for _, b := range s.Backends {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Name, b.IP, b.Weight, b.State, b.Forwarding,
					b.Health, firstOf(b.NextHop, "-"), firstOf(b.NextHopMAC, "unresolved"), b.NewFlows)
			}
		}
		heading := "\nSERVICE\tBACKEND\tPASSIVE DETECTION"
		for _, s := range st.Services {
			for _, b := range s.Backends {
				if b.Passive != "" {
					if heading != "" {
						fmt.Fprintln(w, heading)
						heading = ""
					}
					fmt.Fprintf(w, "%s\t%s\t%s\n", s.Name, b.IP, b.Passive)
				}
			}
		}
		probes(w, st.Services)
	})
}

// probes prints how each monitored backend is probed and, for those
// unhealthy, why.
func probes(w io.Writer, svcs []v1.ServiceStatus) {
	head := false
	var why []string
	for _, s := range svcs {
		for _, b := range s.Backends {
			if b.Probe == nil {
				continue
			}
			if !head {
				fmt.Fprintln(w, "\nSERVICE\tBACKEND\tPROBE\tVIA\tTARGET\tLAST-RESULT")
				head = true
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, b.IP, b.Probe.Type, b.Probe.Via, b.Probe.Target, firstOf(b.Probe.LastResult, "-"))
			if b.HealthReason != "" {
				why = append(why, fmt.Sprintf("%s %s: %s", s.Name, b.IP, b.HealthReason))
			}
		}
	}
	if len(why) > 0 {
		fmt.Fprintln(w, "\nUNHEALTHY")
		for _, l := range why {
			fmt.Fprintln(w, l)
		}
	}
}

func (c *apiCmd) stats() error {
	if err := c.nargs(0, "stats"); err != nil {
		return err
	}
	var st v1.Stats
	raw, err := c.fetch("/api/v1/stats", &st)
	if err != nil {
		return err
	}
	return c.show(raw, func(w io.Writer) {
		t := st.Totals
		fmt.Fprintf(w, "generation %d, changes accepted %d, rejected %d\n\n", st.Generation, st.Changes.Accepted, st.Changes.Rejected)
		fmt.Fprintln(w, "RX-PACKETS\tRX-BYTES\tTX-PACKETS\tTX-BYTES\tTO-KERNEL\tFROM-KERNEL\tDROPPED")
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%d\t%d\n", t.RxPackets, t.RxBytes, t.TxPackets, t.TxBytes, t.ToKernel, t.FromKernel, t.Dropped)
		f := st.Flows
		fmt.Fprintln(w, "\nFLOWS\tHITS\tMISSES\tEVICTIONS\tEXPIRED\tREMAPPED\tSTATELESS\tTABLE-FULL")
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", f.Entries, f.Hits, f.Misses, f.Evictions, f.Expired, f.Remapped, f.Stateless, f.TableFull)
		reasons := make([]string, 0, len(st.Drops))
		for r, n := range st.Drops {
			if n > 0 {
				reasons = append(reasons, r)
			}
		}
		if len(reasons) > 0 {
			sort.Strings(reasons)
			fmt.Fprintln(w, "\nDROP-REASON\tPACKETS")
			for _, r := range reasons {
				fmt.Fprintf(w, "%s\t%d\n", r, st.Drops[r])
			}
		}
		fmt.Fprintln(w, "\nSERVICE\tBACKEND\tPACKETS\tBYTES\tNEW-FLOWS\tSYN-RETRANSMITS\tUNANSWERED-FLOWS")
		for _, s := range st.Services {
			fmt.Fprintf(w, "%s\t*\t%d\t%d\t\t\t\n", s.Name, s.Packets, s.Bytes)
			for _, b := range s.Backends {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", s.Name, b.IP, b.Packets, b.Bytes, b.NewFlows, b.SynRetransmits, b.UnansweredFlows)
			}
		}
		fmt.Fprintln(w, "\nWORKER\tRX-PACKETS\tTX-PACKETS\tDROPPED\tFLOWS\tBUSY")
		for _, k := range st.Workers {
			fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%.1f%%\n", k.Worker, k.RxPackets, k.TxPackets, k.Dropped, k.FlowEntries, 100*k.BusyRatio)
		}
	})
}

// apply makes the API's services match the file in one change (PUT
// /api/v1/services): every service of the file, existing ones replaced in
// place, new ones appended, and those not in the file kept, or with --prune
// deleted. It is all or nothing: the appliance validates the whole new
// list and either publishes it or changes nothing, so services may also
// trade VIPs. Nothing is sent when nothing would change.
func (c *apiCmd) apply() error {
	if c.file == "" || len(c.args) != 0 {
		return usageError("usage: dsrctl apply -f FILE [--prune]")
	}
	want, lines, err := readServices(c.file)
	if err != nil {
		return err
	}
	var have v1.ServiceList
	if _, err := c.fetch("/api/v1/services", &have); err != nil {
		return err
	}
	inFile := map[string]v1.Service{}
	for _, s := range want {
		inFile[s.Name] = s
	}
	existing := map[string]v1.Service{}
	var next []v1.Service
	var report []string
	changed := false
	for _, s := range have.Services {
		existing[s.Name] = s
		f, ok := inFile[s.Name]
		switch {
		case ok:
			next = append(next, f)
		case c.prune:
			report = append(report, "service/"+s.Name+" deleted")
			changed = true
		default:
			next = append(next, s)
		}
	}
	for _, s := range want {
		old, ok := existing[s.Name]
		if !ok {
			continue
		}
		if reflect.DeepEqual(old.Clone(), s.Clone()) {
			report = append(report, "service/"+s.Name+" unchanged")
		} else {
			report = append(report, "service/"+s.Name+" replaced")
			changed = true
		}
	}
	for _, s := range want {
		if _, ok := existing[s.Name]; !ok {
			next = append(next, s)
			report = append(report, "service/"+s.Name+" created")
			changed = true
		}
	}
	if changed {
		if _, err := c.call(http.MethodPut, "/api/v1/services", v1.ServiceList{Services: next}); err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				ae.at = func(field string) string { return fileLine(c.file, lines, inFile, field) }
			}
			return fmt.Errorf("apply: nothing changed: %w", err)
		}
	}
	for _, r := range report {
		fmt.Fprintln(c.out, r)
	}
	return nil
}

// change sends one change of service name and reports it.
func (c *apiCmd) change(method, path string, in any, name, done string) error {
	if _, err := c.call(method, path, in); err != nil {
		return fmt.Errorf("service/%s: %w", name, err)
	}
	fmt.Fprintf(c.out, "service/%s %s\n", name, done)
	return nil
}

// readServices reads the services of a YAML file strictly: unknown keys,
// values of the wrong type, a missing services key and duplicate names
// are errors, each with its line. The file may be a whole config file;
// only its services are returned, with the lines of the file's fields.
func readServices(path string) ([]v1.Service, *v1.Lines, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	doc, lines, err := v1.DecodeYAML(b)
	if err != nil {
		if es := v1.AllFieldErrors(err); es != nil {
			return nil, nil, &v1.FileError{Path: path, Errs: es}
		}
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if lines.Of("services") == 0 {
		return nil, nil, fmt.Errorf("%s: no services: list (write services: [] to mean none)", path)
	}
	seen := map[string]bool{}
	var dups v1.FieldErrors
	for i, s := range doc.Services {
		if seen[s.Name] {
			dups = append(dups, &v1.FieldError{Field: "services[" + s.Name + "].name",
				Message: fmt.Sprintf("service %q appears twice", s.Name), Line: lines.At(fmt.Sprintf("services[%d].name", i))})
		}
		seen[s.Name] = true
	}
	if dups != nil {
		return nil, nil, &v1.FileError{Path: path, Errs: dups}
	}
	return doc.Services, lines, nil
}

// fileLine returns FILE:LINE of an API error's field when it is in a
// service of the file (inFile), "" otherwise.
func fileLine(file string, lines *v1.Lines, inFile map[string]v1.Service, field string) string {
	rest, ok := strings.CutPrefix(field, "services[")
	name, _, ok2 := strings.Cut(rest, "]")
	if !ok || !ok2 {
		return ""
	}
	if _, ok := inFile[name]; !ok {
		return ""
	}
	if l := lines.Of(field); l > 0 {
		return file + ":" + strconv.Itoa(l)
	}
	return ""
}

func (c *apiCmd) delete() error {
	switch {
	case len(c.args) == 2 && c.args[0] == "service":
		return c.change(http.MethodDelete, servicePath(c.args[1]), nil, c.args[1], "deleted")
	case len(c.args) == 3 && c.args[0] == "backend":
		if _, err := c.call(http.MethodDelete, backendPath(c.args[1], c.args[2]), nil); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "backend %s of service/%s deleted\n", c.args[2], c.args[1])
		return nil
	}
	return usageError("usage: dsrctl delete service NAME | delete backend NAME IP")
}

func (c *apiCmd) drain() error {
	if err := c.nargs(2, "drain NAME IP"); err != nil {
		return err
	}
	state := "drain"
	raw, err := c.call(http.MethodPatch, backendPath(c.args[0], c.args[1]), v1.BackendPatch{State: &state})
	if err != nil {
		return err
	}
	return c.show(raw, func(w io.Writer) {
		fmt.Fprintf(w, "backend %s of service/%s draining: established flows stay, no new ones\n", c.args[1], c.args[0])
	})
}
