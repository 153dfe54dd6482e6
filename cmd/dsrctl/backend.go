package main

// `dsrctl backend` configures the host it runs on as a DSR backend, or prints
// the commands that do so (see backend_script.go):
//
//	backend setup    --vip V --mode l2|ipip|gre [--dev IFACE] [--hook auto|tcx|tc] [--bpffs DIR]
//	backend teardown --vip V --mode l2|ipip|gre [--dev IFACE] [--bpffs DIR]
//	backend status   [--bpffs DIR] [-o table|json]
//	backend script   --vip V --mode l2|ipip|gre [--os linux|windows] [--dev IFACE]
//	backend check    --vip V --mode l2|ipip|gre [--port P] [--proto tcp|udp] [--dev IFACE]
//
// A DSR backend must accept packets for the VIP without ever claiming the VIP
// on the network: the VIP goes on lo (or on the tunnel device that
// decapsulates the load balancer's IPIP/GRE envelope), ARP is restricted with
// arp_ignore=1 and arp_announce=2, and for ipip/gre reverse path filtering is
// off, because decapsulated packets carry the client's source address. Where
// the kernel has no ipip/ip_gre module, setup attaches the eBPF decapsulator
// of package decap instead (VIP on lo), on TCX or tc ingress (--hook).
//
// An IPv6 VIP goes on lo as a /128 without duplicate address detection, and
// for ipip/gre always with the eBPF decapsulator, which strips IPv4 and IPv6
// envelopes alike. Linux needs no neighbour-discovery counterpart of the ARP
// settings: it answers solicitations only for addresses of the interface
// they arrive on (unless a proxy entry says otherwise, which setup refuses).

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
)

func init() {
	commands["backend"] = func(args []string) int {
		return runBackend(args, os.Stdout, os.Stderr)
	}
}

// DSR modes, as the load balancer's services name them.
const (
	backendModeL2   = "l2"
	backendModeIPIP = "ipip"
	backendModeGRE  = "gre"
)

// backendConfig is the validated form of the backend flags.
type backendConfig struct {
	VIP    netip.Addr
	Mode   string // backendModeL2, backendModeIPIP or backendModeGRE
	Dev    string // data interface; "" = every up interface (setup) / Ethernet (windows script)
	OS     string // script only: "linux" or "windows"
	Hook   string // setup: decapsulator hook, "auto", "tcx" or "tc"
	BPFFS  string // BPF filesystem where an older dsrctl pinned decapsulators ("" = /sys/fs/bpf)
	Output string // status only: "table" or "json"
	Port   int    // check only: the service port whose listener is checked; 0 = none
	Proto  string // check only: "tcp" or "udp"
}

// backendUsageError marks bad command lines: exit code 2.
type backendUsageError struct{ msg string }

func (e backendUsageError) Error() string { return e.msg }

func backendUsagef(format string, a ...any) error {
	return backendUsageError{fmt.Sprintf(format, a...)}
}

const backendUsage = `usage: dsrctl backend <subcommand> [flags]

  setup    --vip V --mode l2|ipip|gre [--dev IFACE] [--hook auto|tcx|tc] [--bpffs DIR]
           configure this host (this network namespace) as a DSR backend:
           VIP /32 on lo (or on the tunl0/gre0 tunnel device when the kernel
           has one), arp_ignore=1, arp_announce=2, rp_filter=0 for ipip/gre;
           an IPv6 VIP: /128 on lo (nodad), the eBPF decapsulator for
           ipip/gre (IPv4 and IPv6 envelopes);
           without kernel tunnel support an eBPF decapsulator is attached to
           every up Ethernet interface at setup time (or --dev). The
           interface holds it: it outlives dsrctl and needs no BPF
           filesystem, so setup works under ip netns exec and in containers.
           --hook tcx: TCX ingress (Linux 6.6+); tc: a cls_bpf filter on a
           clsact qdisc (kernels without TCX); auto (default): the hook the
           interface already uses, else tcx where the kernel has it, else tc.
           Idempotent.
  teardown --vip V --mode l2|ipip|gre [--dev IFACE] [--bpffs DIR]
           undo setup for this VIP and mode, whichever hook it used; the
           decapsulator goes with its last VIP; sysctls are left as they are
  status   [--bpffs DIR] [-o table|json]
           show the eBPF decapsulators, their hooks, VIPs and packet counters

  --bpffs DIR (default /sys/fs/bpf) is only where dsrctl up to December 2026
  pinned its decapsulators: setup moves such a decapsulator to an attachment
  held by the interface and removes the pins, teardown removes them.
  script   --vip V --mode l2|ipip|gre [--os linux|windows] [--dev IFACE]
           print the equivalent commands for a host with kernel tunnels
           (Linux) or a Windows backend (l2 and IPv4 only)
  check    --vip V --mode l2|ipip|gre [--port P] [--proto tcp|udp] [--dev IFACE]
           list what this host lacks to serve the VIP by DSR (what a health
           check through the VIP finds and one of the host's own address
           does not): the VIP on lo, arp_ignore/arp_announce, rp_filter and
           the decapsulator for ipip/gre, a listener on VIP:P (tcp unless
           --proto udp); changes nothing; exit code 1 when something is
           missing

Exit codes: 0 success, 1 the operation failed, 2 bad usage.`

// runBackend is the entry point of `dsrctl backend`; it returns the exit code.
func runBackend(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, backendUsage)
		return 2
	}
	sub, rest := args[0], args[1:]
	var run func(backendConfig, io.Writer) error
	switch sub {
	case "setup":
		run = backendSetup
	case "teardown":
		run = backendTeardown
	case "status":
		run = backendStatus
	case "check":
		run = backendCheck
	case "script":
		run = func(cfg backendConfig, w io.Writer) error {
			s, err := backendScript(cfg)
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, s)
			return err
		}
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, backendUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "dsrctl backend: unknown subcommand %q\n%s\n", sub, backendUsage)
		return 2
	}
	cfg, err := parseBackendFlags(sub, rest, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = run(cfg, stdout)
	}
	var ue backendUsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "dsrctl backend %s: %v\n", sub, err)
		fmt.Fprintln(stderr, "run `dsrctl backend --help` for usage")
		return 2
	default:
		fmt.Fprintf(stderr, "dsrctl backend %s: %v\n", sub, err)
		return 1
	}
}

// Interface names: Linux allows up to 15 bytes; accept the usual characters
// only so they can be printed into a shell script unquoted. Windows names may
// contain spaces but never a double quote.
var (
	backendLinuxIfname = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	backendWinIfname   = regexp.MustCompile(`^[^"%]{1,256}$`)
)

// parseBackendFlags parses and validates the flags of one subcommand.
func parseBackendFlags(sub string, args []string, stderr io.Writer) (backendConfig, error) {
	fs := flag.NewFlagSet("dsrctl backend "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	vip := fs.String("vip", "", "virtual IP address (IPv4 or IPv6)")
	mode := fs.String("mode", "", "DSR mode: l2, ipip or gre")
	dev := fs.String("dev", "", "data interface (default: every up interface; Windows script: Ethernet)")
	osName := fs.String("os", "linux", "script: target OS, linux or windows")
	hook := fs.String("hook", "auto", "setup: decapsulator hook, auto, tcx or tc")
	bpffs := fs.String("bpffs", "", "BPF filesystem where an older dsrctl pinned decapsulators (default /sys/fs/bpf)")
	output := fs.String("o", "table", "status: output format, table or json")
	port := fs.Int("port", 0, "check: the service port whose listener on the VIP is checked")
	proto := fs.String("proto", "tcp", "check: the service protocol, tcp or udp")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return backendConfig{}, err
		}
		return backendConfig{}, backendUsageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return backendConfig{}, backendUsagef("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	allowed := map[string][]string{
		"setup":    {"vip", "mode", "dev", "hook", "bpffs"},
		"teardown": {"vip", "mode", "dev", "bpffs"},
		"status":   {"bpffs", "o"},
		"script":   {"vip", "mode", "dev", "os"},
		"check":    {"vip", "mode", "dev", "port", "proto", "bpffs"},
	}[sub]
	for name := range set {
		if !slices.Contains(allowed, name) {
			return backendConfig{}, backendUsagef("flag --%s does not apply to %s", name, sub)
		}
	}

	cfg := backendConfig{Dev: *dev, OS: *osName, Hook: *hook, BPFFS: *bpffs, Output: *output, Port: *port, Proto: *proto}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return cfg, backendUsagef("--port must be 1..65535, not %d", cfg.Port)
	}
	if cfg.Proto != "tcp" && cfg.Proto != "udp" {
		return cfg, backendUsagef("--proto must be tcp or udp, not %q", cfg.Proto)
	}
	switch cfg.Hook {
	case "auto", "tcx", "tc":
	default:
		return cfg, backendUsagef("--hook must be auto, tcx or tc, not %q", cfg.Hook)
	}
	if sub == "status" {
		if cfg.Output != "table" && cfg.Output != "json" {
			return cfg, backendUsagef("-o must be table or json, not %q", cfg.Output)
		}
		return cfg, nil
	}
	if *vip == "" {
		return cfg, backendUsagef("--vip is required")
	}
	a, err := netip.ParseAddr(*vip)
	if err != nil {
		return cfg, backendUsagef("--vip %q is not an IP address", *vip)
	}
	if a.Zone() != "" || a.Is4In6() {
		return cfg, backendUsagef("--vip %s: give an IPv4 address or an IPv6 address without zone, not an IPv4-mapped one", a)
	}
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() ||
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return cfg, backendUsagef("--vip %s cannot be a VIP", a)
	}
	cfg.VIP = a
	switch *mode {
	case backendModeL2, backendModeIPIP, backendModeGRE:
		cfg.Mode = *mode
	case "":
		return cfg, backendUsagef("--mode is required (l2, ipip or gre)")
	default:
		return cfg, backendUsagef("--mode must be l2, ipip or gre, not %q", *mode)
	}
	cfg.OS = strings.ToLower(cfg.OS)
	if cfg.OS != "linux" && cfg.OS != "windows" {
		return cfg, backendUsagef("--os must be linux or windows, not %q", *osName)
	}
	if cfg.Dev != "" {
		re := backendLinuxIfname
		if cfg.OS == "windows" {
			re = backendWinIfname
		}
		if !re.MatchString(cfg.Dev) {
			return cfg, backendUsagef("--dev %q is not a valid interface name", cfg.Dev)
		}
	}
	return cfg, nil
}
