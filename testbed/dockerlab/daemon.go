// Package dockerlab runs the dsrlb appliance image (docker/Dockerfile) in
// tests on a machine that cannot pull from any registry: a private Docker
// daemon that leaves the host's network alone, Debian bookworm base images
// made with debootstrap and cached between runs, image builds on them, and
// the `docker run` command lines of docker/README.md.
package dockerlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The daemon's programs: those of Debian's docker.io. The client is named
// by path because a newer one earlier in PATH may refuse BuildKit builds
// without its buildx plugin, which the 20.10 client does not need.
const (
	Dockerd = "/usr/sbin/dockerd"
	CLI     = "/usr/bin/docker"
)

// Where the private test daemon keeps its socket, images and runtime
// state. The data root persists, so base images and the build cache
// survive the run.
const (
	Socket   = "/run/dsrlb-test-docker.sock"
	DataRoot = "/var/lib/dsrlb-test-docker"
	ExecRoot = "/run/dsrlb-test-docker"
)

// daemonFlags keep dockerd off the host's network: no docker0 bridge, no
// iptables or ip6tables rules, no change to ip_forward. Containers then
// run with --network none (or another container's namespace) and builds
// with --network host; user-defined bridge networks still work, and a
// daemon started in a namespace of its own (Options.NetNS) keeps them
// there.
var daemonFlags = []string{
	"--bridge", "none",
	"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
}

// Options say which daemon Start talks to. The zero value is the private
// test daemon (Socket, DataRoot, ExecRoot).
type Options struct {
	// Socket, DataRoot and ExecRoot are set together or not at all; the
	// daemon's pid file and log are ExecRoot.pid and ExecRoot.log.
	Socket, DataRoot, ExecRoot string
	// NetNS, if set, is the path of a network namespace for dockerd
	// (nsenter --net=): the bridges and veths of its container networks
	// are made there.
	NetNS string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Daemon is a client of one dockerd, which Start started or found running.
type Daemon struct {
	// Host is the daemon's address (DOCKER_HOST).
	Host string
	// Log is the daemon's log file when started here.
	Log  string
	logf func(format string, args ...any)
	cmd  *exec.Cmd
	done chan struct{}
}

// Start returns a client of the daemon of o, starting dockerd when no
// daemon answers on its socket. Close stops only a daemon started here. The
// error says what is missing when Docker cannot run.
func Start(ctx context.Context, o Options) (*Daemon, error) {
	if o.Socket == "" {
		o.Socket, o.DataRoot, o.ExecRoot = Socket, DataRoot, ExecRoot
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	for _, p := range []string{Dockerd, CLI} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("dockerlab: %s missing: install Debian's docker.io (make docker-deps): %w", p, err)
		}
	}
	d := &Daemon{Host: "unix://" + o.Socket, logf: logf}
	if v, err := d.version(ctx); err == nil {
		logf("docker: daemon %s already running on %s: using it", v, o.Socket)
		return d, nil
	}
	d.Log = o.ExecRoot + ".log"
	f, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Its own containerd namespaces keep it apart from another daemon
	// sharing the system's containerd.
	ns := filepath.Base(o.ExecRoot)
	argv := append([]string{Dockerd, "--host", d.Host, "--data-root", o.DataRoot, "--exec-root", o.ExecRoot,
		"--pidfile", o.ExecRoot + ".pid", "--containerd-namespace", ns, "--containerd-plugins-namespace", ns + "-plugins"},
		daemonFlags...)
	if o.NetNS != "" {
		argv = append([]string{"nsenter", "--net=" + o.NetNS}, argv...)
	}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = f, f
	// Its own process group: a terminal's Ctrl-C stops the test, whose
	// clean-up then stops the daemon.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("dockerlab: start dockerd: %w", err)
	}
	d.done = make(chan struct{})
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	start := time.Now()
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		v, err := d.version(wait)
		if err == nil {
			logf("docker: started dockerd %s (pid %d, log %s) in %v", v, d.cmd.Process.Pid, d.Log, time.Since(start).Round(time.Millisecond))
			return d, nil
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("dockerlab: dockerd exited; end of %s:\n%s", d.Log, lastLines(readFile(d.Log), 20))
		case <-wait.Done():
			d.Close()
			return nil, fmt.Errorf("dockerlab: dockerd not answering on %s: %w; end of %s:\n%s", o.Socket, err, d.Log, lastLines(readFile(d.Log), 20))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Close stops the daemon if Start started it (SIGTERM; SIGKILL after 30 s).
func (d *Daemon) Close() error {
	if d.cmd == nil {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		d.logf("docker: stopped dockerd")
		return nil
	case <-time.After(30 * time.Second):
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	return errors.New("dockerlab: dockerd did not stop on SIGTERM within 30 s; killed")
}

// Argv is the command line of the client running args against the daemon.
func (d *Daemon) Argv(args ...string) []string {
	return append([]string{CLI, "--host", d.Host}, args...)
}

// Command is the client running args against the daemon, with BuildKit
// enabled for builds.
func (d *Daemon) Command(ctx context.Context, args ...string) *exec.Cmd {
	argv := d.Argv(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=1")
	return cmd
}

// Run runs the client with args and returns its standard output; the
// error carries standard error.
func (d *Daemon) Run(ctx context.Context, args ...string) (string, error) {
	return output(d.Command(ctx, args...), "docker "+strings.Join(args, " "))
}

// output runs cmd and returns its standard output; the error names what
// was run and carries standard error.
func output(cmd *exec.Cmd, what string) (string, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", what, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (d *Daemon) version(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := d.Run(ctx, "version", "--format", "{{.Server.Version}}")
	return strings.TrimSpace(out), err
}

// Inspect returns `docker inspect --format format name`, trimmed.
func (d *Daemon) Inspect(ctx context.Context, name, format string) (string, error) {
	out, err := d.Run(ctx, "inspect", "--format", format, name)
	return strings.TrimSpace(out), err
}

// Remove force-removes containers and their anonymous volumes (the image's
// VOLUME), ignoring containers that do not exist.
func (d *Daemon) Remove(ctx context.Context, names ...string) error {
	var errs []error
	for _, n := range names {
		if _, err := d.Run(ctx, "rm", "--force", "--volumes", n); err != nil && !strings.Contains(err.Error(), "No such container") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readFile returns the content of the file at path ("" if unreadable).
func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
