package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/internal/e2eutil/e2ehost"
)

// Profile records the proxy's CPU profile over the dashboard and writes it
// to out, for profile-guided optimisation (cmd/proxy/default.pgo): the
// proxy with push-down off (the engine over remote read, its heaviest
// path) and then in the default configuration (pushed answers decoded and
// combined), each profiled for perProxy while the dashboard is asked of it
// over and over, one query at a time. The two profiles are merged with `go
// tool pprof -proto`.
func Profile(ctx context.Context, opts Options, out string, perProxy time.Duration, stderr io.Writer) error {
	r, err := newRunner(opts, stderr)
	if err != nil {
		return err
	}
	defer r.close()
	if err := r.setup(ctx); err != nil {
		return err
	}
	var files []string
	for _, kind := range []struct {
		name string
		kind proxyKind
	}{
		{"proxy-profile-off", proxyKind{}},
		{"proxy-profile-default", proxyKind{pushDown: true, reassociate: true}},
	} {
		s, err := r.startProxy(kind.name, kind.kind)
		if err != nil {
			return err
		}
		file := filepath.Join(r.workDir, kind.name+".pprof")
		r.log.printf("profiling %s for %s", kind.name, perProxy)
		err = r.profileUnderLoad(ctx, s.URL, perProxy, file)
		s.stop(5 * time.Second)
		if err != nil {
			return fmt.Errorf("%s: %w", kind.name, err)
		}
		files = append(files, file)
	}
	return mergeProfiles(ctx, out, files)
}

// profileUnderLoad asks the dashboard of the proxy at base, query after
// query, while its CPU is profiled for d into file.
func (r *runner) profileUnderLoad(ctx context.Context, base string, d time.Duration, file string) error {
	// Warm the proxy's connections and plan cache outside the profile.
	for _, rq := range r.reqs {
		if _, _, err := query(ctx, r.hc, base, rq, false); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fetchProfile(ctx, base, d, file) }()
	for {
		for _, rq := range r.reqs {
			select {
			case err := <-done:
				return err
			default:
			}
			if _, _, err := query(ctx, r.hc, base, rq, false); err != nil {
				cancel()
				return errors.Join(err, <-done)
			}
		}
	}
}

// fetchProfile writes the CPU profile the proxy at base records over d.
func fetchProfile(ctx context.Context, base string, d time.Duration, file string) error {
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile: %s", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	return f.Close()
}

// mergeProfiles writes files merged into one profile at out.
func mergeProfiles(ctx context.Context, out string, files []string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("merging profiles: the go command is needed on PATH: %w", err)
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, goBin, append([]string{"tool", "pprof", "-proto"}, files...)...)
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("go tool pprof -proto: %w\n%s", err, e2ehost.LastBytes(stderr.Bytes(), 4<<10))
	}
	return os.Rename(tmp, out)
}
