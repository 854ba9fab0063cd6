package e2ehost

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildProxy compiles the repository's cmd/proxy at root into out, with
// the version `git describe` gives the tree (so a report names what it
// measured). It builds to a temporary name and renames, so a run already
// using out is not disturbed.
func BuildProxy(ctx context.Context, root, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build proxy: the go command is needed on PATH: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("build proxy: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", out, os.Getpid())
	version := "dev"
	if b, err := exec.CommandContext(ctx, "git", "-C", root, "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(b))
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-ldflags", "-X main.version="+version, "-o", tmp, "./cmd/proxy")
	cmd.Dir = root
	cmd.SysProcAttr = sysProcAttr()
	if b, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("go build ./cmd/proxy: %w\n%s", err, LastBytes(b, 4<<10))
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("build proxy: %w", err)
	}
	return nil
}

// LastBytes is the end of b, at most n bytes of it (e.g. of a command's
// output, for an error).
func LastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
