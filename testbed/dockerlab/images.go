package dockerlab

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Repositories of the images made here; only tags of these are ever
// removed.
const (
	BaseRepo    = "dsrlb-test/bookworm"
	BuilderRepo = "dsrlb-test/golang"
)

// baseRecipe names the way DebianBase makes its image. Change it whenever
// the recipe changes, so that no cached image of the old one is used.
const baseRecipe = "minbase-slim-1"

// DebianMirror is where debootstrap fetches bookworm;
// $DSRLB_TEST_DEBIAN_MIRROR overrides it.
const DebianMirror = "http://deb.debian.org/debian"

// HasImage reports whether the daemon has image ref.
func (d *Daemon) HasImage(ctx context.Context, ref string) bool {
	_, err := d.Run(ctx, "image", "inspect", "--format", "{{.Id}}", ref)
	return err == nil
}

// ImageSize is the size of image ref in bytes, as `docker images` shows it.
func (d *Daemon) ImageSize(ctx context.Context, ref string) (int64, error) {
	out, err := d.Run(ctx, "image", "inspect", "--format", "{{.Size}}", ref)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(out), 10, 64)
}

// RemoveImage removes image ref (its tag; layers other images share stay).
func (d *Daemon) RemoveImage(ctx context.Context, ref string) error {
	_, err := d.Run(ctx, "image", "rm", ref)
	return err
}

// removeOtherTags removes every tag of repo but keep: the images of older
// recipes, toolchains or CA bundles.
func (d *Daemon) removeOtherTags(ctx context.Context, repo, keep string) {
	out, err := d.Run(ctx, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo)
	if err != nil {
		return
	}
	for _, ref := range strings.Fields(out) {
		if ref != keep {
			if err := d.RemoveImage(ctx, ref); err == nil {
				d.logf("docker: removed outdated image %s", ref)
			}
		}
	}
}

// DebianBase returns a Debian bookworm base image like the public
// debian:bookworm-slim: `debootstrap --variant=minbase`, then no apt lists,
// package cache, documentation (copyright files aside), manual pages or
// locales, and dpkg told to leave them out of later installs too. It is
// made and imported (`docker import`) only when the daemon lacks it, which
// takes one to two minutes; its tag names the recipe.
func (d *Daemon) DebianBase(ctx context.Context) (string, error) {
	ref := BaseRepo + ":" + baseRecipe
	if d.HasImage(ctx, ref) {
		return ref, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("dockerlab: debootstrap missing: install it (make docker-deps): %w", err)
	}
	mirror := DebianMirror
	if m := os.Getenv("DSRLB_TEST_DEBIAN_MIRROR"); m != "" {
		mirror = m
	}
	root, err := os.MkdirTemp("", "dsrlb-test-rootfs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(root)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "bookworm", root, mirror)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("dockerlab: debootstrap bookworm from %s: %w\n%s", mirror, err, lastLines(string(out), 15))
	}
	if err := slim(root); err != nil {
		return "", err
	}
	tarCmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "-C", root, "-c", ".")
	imp := d.Command(ctx, "import", "--change", "CMD [\"bash\"]", "-", ref)
	if err := pipe(tarCmd, imp); err != nil {
		return "", fmt.Errorf("dockerlab: import %s: %w", ref, err)
	}
	d.logf("docker: made %s with debootstrap from %s in %v", ref, mirror, time.Since(start).Round(time.Second))
	d.removeOtherTags(ctx, BaseRepo, ref)
	return ref, nil
}

// slimDpkg tells dpkg to leave out what slim removes.
const slimDpkg = `# dsrlb-test: keep the image small, as debian:bookworm-slim does.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
`

// slim trims the root file system at root (see DebianBase).
func slim(root string) error {
	for _, pattern := range []string{
		"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
		"usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
	} {
		matches, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if filepath.Base(m) == "partial" || filepath.Base(m) == "lock" {
				continue
			}
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	err := filepath.WalkDir(filepath.Join(root, "usr/share/doc"), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || e.Name() == "copyright" {
			return err
		}
		return os.Remove(p)
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, "etc/dpkg/dpkg.cfg.d/dsrlb-test-slim"), []byte(slimDpkg), 0o644)
}

// GoBuilder returns a builder image for docker/Dockerfile's BUILDER_IMAGE:
// base plus this machine's Go toolchain (`go env GOROOT`, as
// /usr/local/go) and the CA bundle this machine's Go trusts (as
// SSL_CERT_FILE), so that `go mod download` in a build reaches the module
// proxy exactly as the host does, through a TLS-inspecting proxy included.
// It is made only when the daemon lacks it; its tag names the Go version
// and the bundle.
func (d *Daemon) GoBuilder(ctx context.Context, base string) (string, error) {
	goEnv, err := exec.CommandContext(ctx, "go", "env", "GOROOT", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("dockerlab: go env: %w", err)
	}
	f := strings.Fields(string(goEnv))
	if len(f) != 2 {
		return "", fmt.Errorf("dockerlab: go env GOROOT GOVERSION: unexpected %q", goEnv)
	}
	goroot, version := f[0], strings.TrimPrefix(f[1], "go")
	caFile := os.Getenv("SSL_CERT_FILE")
	if caFile == "" {
		caFile = "/etc/ssl/certs/ca-certificates.crt"
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return "", fmt.Errorf("dockerlab: CA bundle: %w", err)
	}
	sum := sha256.Sum256(append([]byte(base+"\n"), ca...))
	ref := fmt.Sprintf("%s:%s-%s", BuilderRepo, version, hex.EncodeToString(sum[:])[:12])
	if d.HasImage(ctx, ref) {
		return ref, nil
	}
	start := time.Now()
	out, err := d.Run(ctx, "create", base, "true")
	if err != nil {
		return "", err
	}
	c := strings.TrimSpace(out)
	defer d.Remove(context.Background(), c)
	// docker cp - unpacks a tar stream at / of the container.
	cp := d.Command(ctx, "cp", "-", c+":/")
	w, err := cp.StdinPipe()
	if err != nil {
		return "", err
	}
	cpOut := &strings.Builder{}
	cp.Stdout, cp.Stderr = cpOut, cpOut
	if err := cp.Start(); err != nil {
		return "", err
	}
	werr := writeTree(w, goroot, "usr/local/go", caFile, "etc/ssl/host-ca-certificates.crt")
	w.Close()
	if err := cp.Wait(); err != nil || werr != nil {
		return "", fmt.Errorf("dockerlab: copy Go into the builder: %v %v: %s", werr, err, cpOut)
	}
	if _, err := d.Run(ctx, "commit",
		"--change", "ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"--change", "ENV GOTOOLCHAIN=local",
		"--change", "ENV SSL_CERT_FILE=/etc/ssl/host-ca-certificates.crt",
		c, ref); err != nil {
		return "", err
	}
	d.logf("docker: made %s (Go %s from %s) in %v", ref, version, goroot, time.Since(start).Round(time.Second))
	d.removeOtherTags(ctx, BuilderRepo, ref)
	return ref, nil
}

// writeTree writes a tar stream of directory dir as dirName and of file
// file as fileName (both relative to the archive's root) to w, with the
// parent directories of both.
func writeTree(w io.Writer, dir, dirName, file, fileName string) error {
	tw := tar.NewWriter(w)
	parents := map[string]bool{}
	addParents := func(name string) error {
		var dirs []string
		for p := filepath.Dir(name); p != "." && !parents[p]; p = filepath.Dir(p) {
			parents[p] = true
			dirs = append([]string{p}, dirs...)
		}
		for _, p := range dirs {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		return nil
	}
	add := func(src, name string, info fs.FileInfo) error {
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			var err error
			if link, err = os.Readlink(src); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name, h.Uid, h.Gid, h.Uname, h.Gname = name, 0, 0, "", ""
		if info.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	}
	if err := addParents(dirName); err != nil {
		return err
	}
	err := filepath.Walk(dir, func(p string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		return add(p, filepath.Join(dirName, rel), info)
	})
	if err != nil {
		return err
	}
	info, err := os.Stat(file)
	if err != nil {
		return err
	}
	if err := addParents(fileName); err != nil {
		return err
	}
	if err := add(file, fileName, info); err != nil {
		return err
	}
	return tw.Close()
}

// BuildOptions are the inputs of Build.
type BuildOptions struct {
	// Context is the repository's root; the Dockerfile is
	// docker/Dockerfile in it.
	Context string
	// Tag names the image.
	Tag string
	// Base and Builder are the BASE_IMAGE and BUILDER_IMAGE build
	// arguments.
	Base, Builder string
	// Target is the stage to build; empty: the appliance (the last).
	Target string
	// Log receives the build's output (plain progress).
	Log string
}

// Build builds docker/Dockerfile with BuildKit and the host's network (for
// the Go module proxy and the Debian archive), passing the host's GOPROXY
// and GOSUMDB on.
func (d *Daemon) Build(ctx context.Context, o BuildOptions) error {
	goEnv, err := exec.CommandContext(ctx, "go", "env", "GOPROXY", "GOSUMDB").Output()
	if err != nil {
		return fmt.Errorf("dockerlab: go env: %w", err)
	}
	env := strings.Split(strings.TrimSpace(string(goEnv)), "\n")
	if len(env) != 2 {
		return fmt.Errorf("dockerlab: go env GOPROXY GOSUMDB: unexpected %q", goEnv)
	}
	log, err := os.Create(o.Log)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := d.Command(ctx, "build", "--network", "host", "--progress", "plain",
		"--file", filepath.Join(o.Context, "docker", "Dockerfile"),
		"--build-arg", "BASE_IMAGE="+o.Base, "--build-arg", "BUILDER_IMAGE="+o.Builder,
		"--build-arg", "GOPROXY="+env[0], "--build-arg", "GOSUMDB="+env[1],
		"--tag", o.Tag, o.Context)
	if o.Target != "" {
		cmd.Args = append(cmd.Args, "--target", o.Target)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("dockerlab: docker build: %w; end of %s:\n%s", err, o.Log, lastLines(readFile(o.Log), 30))
	}
	return nil
}

// pipe runs from | to and waits for both.
func pipe(from, to *exec.Cmd) error {
	r, err := from.StdoutPipe()
	if err != nil {
		return err
	}
	to.Stdin = r
	var fromErr, toOut strings.Builder
	from.Stderr = &fromErr
	to.Stdout, to.Stderr = &toOut, &toOut
	if err := from.Start(); err != nil {
		return err
	}
	if err := to.Run(); err != nil {
		_ = from.Process.Kill()
		_ = from.Wait()
		return fmt.Errorf("%s: %w: %s", to.Args[0], err, strings.TrimSpace(toOut.String()))
	}
	if err := from.Wait(); err != nil {
		return fmt.Errorf("%s: %w: %s", from.Args[0], err, strings.TrimSpace(fromErr.String()))
	}
	return nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
