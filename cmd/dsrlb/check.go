package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/dsrlb/dsrlb/control"
)

func cmdCheck(args []string) int { return runCheck(args, os.Stdout, os.Stderr) }

// runCheck is `dsrlb check`: it decodes and validates a config file as
// `run` would, touching neither DPDK, netlink nor the state file, and
// prints every error as FILE:LINE: field: message on stderr (exit 1), or
// a one-line summary on stdout (exit 0). With --state it also tells,
// without changing the file, what `run` would start from.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML)")
	statePath := fs.String("state", "", "state file: also tell what run would start from (read only)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: dsrlb check --config FILE [--state FILE]")
		return 2
	}
	cfg, err := control.LoadFile(*cfgPath)
	var fe *control.FileError
	switch {
	case errors.As(err, &fe):
		fmt.Fprintln(stderr, fe)
		fmt.Fprintf(stderr, "%s: %d %s\n", *cfgPath, len(fe.Errs), plural(len(fe.Errs), "error", "errors"))
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "dsrlb check:", err)
		return 1
	}
	t, err := cfg.Validate()
	if err != nil { // LoadFile validated it
		fmt.Fprintln(stderr, "dsrlb check:", err)
		return 1
	}
	backends := 0
	for _, s := range t.Services {
		backends += len(s.Backends)
	}
	bgp := "no BGP"
	if t.BGP != nil {
		bgp = fmt.Sprintf("BGP with %d %s", len(t.BGP.Peers), plural(len(t.BGP.Peers), "peer", "peers"))
	}
	fmt.Fprintf(stdout, "%s: ok: %d %s, %d %s, %d %s, %s\n", *cfgPath, len(t.Ports), plural(len(t.Ports), "port", "ports"),
		len(t.Services), plural(len(t.Services), "service", "services"), backends, plural(backends, "backend", "backends"), bgp)
	if *statePath != "" {
		printStateChoice(stdout, *statePath, control.ChooseState(cfg, *statePath))
	}
	return 0
}

// printStateChoice tells what `run --state path` would start from.
func printStateChoice(w io.Writer, path string, c control.StateChoice) {
	switch c.Event {
	case "state_none":
		fmt.Fprintf(w, "%s: none: run starts from the config's services\n", path)
	case "state_loaded":
		fmt.Fprintf(w, "%s: run restores its %d %s: %s\n", path, len(c.Services), plural(len(c.Services), "service", "services"), c.Reason)
	case "state_superseded":
		aside := "; it holds the same services"
		if c.SetAside {
			aside = "; run sets the state file, and the changes made over the API in it, aside"
		}
		fmt.Fprintf(w, "%s: run starts from the config's services: %s%s\n", path, c.Reason, aside)
	default:
		fmt.Fprintf(w, "%s: not usable, run sets it aside and starts from the config's services: %s\n", path, c.Reason)
		for _, e := range c.Errors {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
