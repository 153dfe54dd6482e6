package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dsrlb/dsrlb/cmd/dsrlb/appliance"
	"github.com/dsrlb/dsrlb/control"
)

// cmdRun is the appliance: data plane with a kernel tap per port, health
// checks, neighbour resolution, the REST API and BGP, until SIGINT/SIGTERM.
// On a signal it withdraws every VIP, waits bgp.drain, then stops
// forwarding (appliance.Appliance).
func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (YAML)")
	statePath := fs.String("state", "/var/lib/dsrlb/state.json", "state file: services as changed over the API")
	newLog := logFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLog()
	if *cfgPath == "" {
		fmt.Fprintln(os.Stderr, "dsrlb run: --config is required")
		return 2
	}
	cfg, err := control.LoadFile(*cfgPath)
	if err != nil {
		return fail(log, err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	app, err := appliance.New(cfg, appliance.Deps{StatePath: *statePath, APIToken: os.Getenv("DSRLB_API_TOKEN"), Log: log})
	if err != nil {
		return fail(log, err)
	}
	defer app.Close()
	if err := app.Run(ctx); err != nil {
		return fail(log, err)
	}
	return 0
}
