package main

import (
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// setMemoryLimit sets the Go runtime's soft memory limit to ratio of the
// container's (cgroup) memory limit, as Prometheus' --auto-gomemlimit does,
// so the garbage collector works harder as the process nears the limit
// instead of the kernel killing it. A GOMEMLIMIT in the environment wins;
// without a cgroup limit nothing changes. It returns the limit in force
// (math.MaxInt64: none). from is memlimit.FromCgroup but in tests.
func setMemoryLimit(enabled bool, ratio float64, from memlimit.Provider, logger *slog.Logger) (int64, error) {
	if !enabled {
		return debug.SetMemoryLimit(-1), nil
	}
	if math.IsNaN(ratio) || ratio <= 0 || ratio > 1 {
		return 0, fmt.Errorf("--auto-gomemlimit.ratio: %v is not in (0, 1]", ratio)
	}
	limit, err := memlimit.Set(
		memlimit.WithRatio(ratio),
		memlimit.WithProvider(from),
		memlimit.WithLogger(logger.With("component", "automemlimit")),
	)
	if err != nil {
		// Not fatal: the process runs as it would without the flag.
		logger.Warn("could not set the Go memory limit from the container's", "err", err)
		return debug.SetMemoryLimit(-1), nil
	}
	return limit, nil
}
