package dockerlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// CopyImages copies images refs from d to the daemon to (docker save |
// docker load), for a daemon that cannot build them itself.
func (d *Daemon) CopyImages(ctx context.Context, to *Daemon, refs ...string) error {
	if err := pipe(d.Command(ctx, append([]string{"save"}, refs...)...), to.Command(ctx, "load", "--quiet")); err != nil {
		return fmt.Errorf("dockerlab: copy %v: %w", refs, err)
	}
	return nil
}

// Compose runs docker-compose (Debian's, 1.29) with args on project
// (--project-name) of the compose file against the daemon and returns its
// standard output; the error carries standard error.
func (d *Daemon) Compose(ctx context.Context, project, file string, args ...string) (string, error) {
	if _, err := exec.LookPath("docker-compose"); err != nil {
		return "", fmt.Errorf("dockerlab: docker-compose missing: install it (make docker-deps): %w", err)
	}
	argv := append([]string{"--project-name", project, "--file", file}, args...)
	cmd := exec.CommandContext(ctx, "docker-compose", argv...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
	return output(cmd, "docker-compose "+strings.Join(args, " "))
}
