package nsbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BinariesIn returns the binaries of a directory such as bin/ after
// `make build` (dsrlb, dsrctl, backendsrv), checking that each exists.
func BinariesIn(dir string) (Binaries, error) {
	b := Binaries{
		Dsrlb:      filepath.Join(dir, "dsrlb"),
		Dsrctl:     filepath.Join(dir, "dsrctl"),
		Backendsrv: filepath.Join(dir, "backendsrv"),
	}
	for _, p := range []string{b.Dsrlb, b.Dsrctl, b.Backendsrv} {
		abs, err := filepath.Abs(p)
		if err != nil {
			return b, err
		}
		if _, err := os.Stat(abs); err != nil {
			return b, fmt.Errorf("nsbed: %w", err)
		}
	}
	b.Dsrlb, _ = filepath.Abs(b.Dsrlb)
	b.Dsrctl, _ = filepath.Abs(b.Dsrctl)
	b.Backendsrv, _ = filepath.Abs(b.Backendsrv)
	return b, nil
}

// ModuleRoot is the root directory of the module that contains the
// working directory (dsrlb's repository).
func ModuleRoot() (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("nsbed: go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(gomod))), nil
}

// BuildBinaries builds dsrlb, dsrctl and backendsrv of the module that
// contains the working directory into dir.
func BuildBinaries(dir string) (Binaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	for _, pkg := range []string{"./cmd/dsrlb", "./cmd/dsrctl", "./testbed/backendsrv"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(pkg)), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("nsbed: go build %s: %w\n%s", pkg, err, out)
		}
	}
	return BinariesIn(dir)
}
