// Command prometheus-multi-tenant-proxy serves one Prometheus-compatible query
// API over every discovered Prometheus, each tenant seeing only its series.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"k8s.io/klog/v2"

	"github.com/ethos-io/prometheus-multi-tenant-proxy/cmd/proxy/app"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("prometheus-multi-tenant-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "path to the YAML configuration file")
	port := fs.Int("port", 8080, "port to listen on")
	listen := fs.String("listen-address", "", "address to listen on (host:port); overrides --port")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	autoMemLimit := fs.Bool("auto-gomemlimit", true, "set the Go runtime's memory limit (GOMEMLIMIT) from the container's memory limit (cgroup)")
	autoMemLimitRatio := fs.Float64("auto-gomemlimit.ratio", 0.9, "the share of the container's memory limit to set GOMEMLIMIT to, in (0, 1]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		_, _ = fmt.Fprintf(stdout, "prometheus-multi-tenant-proxy %s (PromQL engine of Prometheus %s)\n", version, app.PromEngineVersion())
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	// client-go logs through klog; make its lines JSON like ours.
	klog.SetSlogLogger(logger.With("component", "client-go"))

	memLimit, err := setMemoryLimit(*autoMemLimit, *autoMemLimitRatio, memlimit.FromCgroup, logger)
	if err != nil {
		return err
	}
	cfg, err := app.LoadConfig(*configFile)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if memLimit == math.MaxInt64 {
		logger.Info("no memory limit known", "engine_max_samples", cfg.Engine.EffectiveMaxSamples())
	} else {
		logger.Info("memory limit", "gomemlimit_bytes", memLimit, "engine_max_samples", cfg.Engine.EffectiveMaxSamples(), "derived", cfg.Engine.MaxSamples == 0)
	}
	addr := *listen
	if addr == "" {
		addr = net.JoinHostPort("", strconv.Itoa(*port))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	proxy, err := app.New(cfg, logger, version)
	if err != nil {
		return err
	}
	defer proxy.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	var mgmt net.Listener
	if a := cfg.Server.ManagementAddress; a != "" {
		if mgmt, err = net.Listen("tcp", a); err != nil {
			_ = ln.Close()
			return fmt.Errorf("server.management_address: %w", err)
		}
		logger.Info("management endpoints listening", "address", mgmt.Addr().String())
	}
	logger.Info("listening", "address", ln.Addr().String(), "version", version)
	err = proxy.Serve(ctx, ln, mgmt)
	logger.Info("stopped")
	return err
}
