// Command dsrctl is the dsrlb command-line client: it talks to the REST API
// (get, apply, delete, drain, stats, events) and sets up DSR backends (backend
// setup, teardown, script).
package main

import (
	"fmt"
	"os"
)

// commands maps each subcommand to its entry point. Each returns the process
// exit code: 0 success, 1 the operation failed, 2 bad usage.
var commands = map[string]func(args []string) int{}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: dsrctl <command> [flags]

API commands (flags --api URL, --token T or DSRLB_API_TOKEN):
  get services|service NAME|status|stats   show state (-o table|json)
  apply -f FILE                            create or replace services from YAML
  delete service NAME | backend NAME IP    remove
  drain NAME IP                            stop new flows to a backend
  stats                                    counters
  events [-f] [--since SEQ] [--count N]    health, config and BGP events (-f: follow)

Backend host commands:
  backend setup --vip V --mode l2|ipip|gre      configure this host as a DSR backend
  backend teardown --vip V --mode l2|ipip|gre   undo it
  backend script --vip V --mode M [--os linux|windows]   print the commands`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			usage()
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "dsrctl: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	os.Exit(cmd(os.Args[2:]))
}
