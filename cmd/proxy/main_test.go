package main

import (
	"fmt"
	"os"
	"testing"
)

// childEnv makes the test binary run the proxy itself instead of the tests,
// so tests can start real proxy processes (and signal them) without a
// separate build.
const childEnv = "PROXY_TEST_RUN_PROXY"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
