package httpapi

import (
	"runtime/debug"
	"strconv"
	"strings"
)

// promVersion turns the imported prometheus module version (v0.316.0) into
// the Prometheus release it is (3.16.0).
var promVersion = func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "3.0.0"
	}
	for _, m := range bi.Deps {
		if m.Path != "github.com/prometheus/prometheus" {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(m.Version, "v"), ".")
		if len(parts) == 3 && parts[0] == "0" {
			minor, err := strconv.Atoi(parts[1])
			if err == nil && minor >= 100 {
				return strconv.Itoa(minor/100) + "." + strconv.Itoa(minor%100) + "." + parts[2]
			}
		}
	}
	return "3.0.0"
}()
