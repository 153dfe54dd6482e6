//go:debug multipathtcp=0

// Command dsrlb is the dsrlb appliance: `run` forwards on the configured
// DPDK ports, `replay` runs the same data plane over a pcap file, `bench`
// measures it, `check` validates a config file. This file only wires flags
// and parts.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

func usage() {
	fmt.Fprintln(os.Stderr, `usage: dsrlb <command> [flags]

  run    --config FILE [--state FILE]             forward until SIGINT/SIGTERM
  check  --config FILE [--state FILE]             validate a config: every error as FILE:LINE: field: message
  replay --config FILE --in IN.pcap --out OUT.pcap run the data plane over a capture
  bench  --config FILE --pcap P --seconds S [--workers N]
  gen    --out P [--flows N] [--sizes 64|imix] ...  write a benchmark capture

Common flags: --log-format json|console, --log-level debug|info|warn|error`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmds := map[string]func([]string) int{
		"run":    cmdRun,
		"check":  cmdCheck,
		"replay": cmdReplay,
		"bench":  cmdBench,
		"gen":    cmdGen,
	}
	fn, ok := cmds[os.Args[1]]
	if !ok {
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			usage()
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "dsrlb: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	os.Exit(fn(os.Args[2:]))
}

// logFlags adds the logging flags to fs and returns a constructor for the
// logger they describe.
func logFlags(fs *flag.FlagSet) func() zerolog.Logger {
	format := fs.String("log-format", "json", "log format: json or console")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	return func() zerolog.Logger {
		var w io.Writer = os.Stderr
		if *format == "console" {
			w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339}
		}
		lvl, err := zerolog.ParseLevel(*level)
		if err != nil {
			lvl = zerolog.InfoLevel
		}
		return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
	}
}

// fail prints err for a person and returns exit code 1.
func fail(log zerolog.Logger, err error) int {
	log.Error().Err(err).Msg("failed")
	fmt.Fprintln(os.Stderr, "dsrlb:", err)
	return 1
}
