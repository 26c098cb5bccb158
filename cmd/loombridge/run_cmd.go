package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"context"
	"errors"
	"fmt"
	"github.com/loombridge/loombridge/internal/health"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/loombridge/loombridge/internal/tracing"
	"github.com/loombridge/loombridge/pipelines"
)

// runFlags are the flags of loombridge run.
type runFlags struct {
	config string
	watch  bool
}

func runRun(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var f runFlags
	fs := newFlags("run", "run -c FILE [--watch=false]", stderr)
	fs.StringVar(&f.config, "c", "", "configuration file (required)")
	fs.StringVar(&f.config, "config", "", "same as -c")
	fs.BoolVar(&f.watch, "watch", true, "reload when the file changes (SIGHUP always reloads)")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if f.config == "" {
		fmt.Fprintln(stderr, "loombridge run: -c FILE is required")
		return exitUsage
	}
	cfg, err := loadConfig(f.config)
	if err != nil {
		printConfigErrors(stderr, f.config, err)
		return exitUsage
	}
	logger := newLogger(stderr, cfg.Log)
	tp, err := startTracing(ctx, cfg, stdout, logger)
	if err != nil {
		logger.Error("cannot start", "error", err)
		return exitFailure
	}
	engine := pipelines.NewEngine(pipelines.EngineOptions{Logger: logger, Stdout: stdout, TracerProvider: tp.TracerProvider(), ProbeLoom: true})
	reg := prometheus.NewRegistry()
	reg.MustRegister(engine.Collector(), buildInfo(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hs, err := health.Start(cfg.HTTP.Addr, engine, reg)
	if err != nil {
		logger.Error("cannot start the health and metrics listener", "error", err)
		tctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		stopTracing(tctx, tp, logger)
		return exitFailure
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Close(ctx)
	}()
	logger.Info("health and metrics", "addr", hs.Addr(), "endpoints", "/healthz /readyz /metrics /status")
	if err := engine.Start(ctx, cfg); err != nil {
		logger.Error("cannot start", "error", err)
		tctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		stopTracing(tctx, tp, logger)
		return exitFailure
	}
	logger.Info("loombridge running", "config", f.config, "pipelines", len(cfg.Pipelines), "version", version)

	reload := make(chan string, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if f.watch {
		err := pipelines.WatchFile(wctx, f.config, pipelines.DefaultWatchDebounce, func() {
			select {
			case reload <- "file changed":
			default:
			}
		})
		if err != nil {
			logger.Warn("not watching the configuration file; SIGHUP still reloads", "error", err)
		}
	}

	for {
		select {
		case <-ctx.Done():
			stopWatch()
			return shutdown(engine, tp, cfg, logger)
		case <-hup:
			cfg = reloadConfig(ctx, engine, cfg, f.config, "SIGHUP", logger)
		case why := <-reload:
			cfg = reloadConfig(ctx, engine, cfg, f.config, why, logger)
		}
	}
}

// reloadConfig loads the file again and applies it; an invalid file keeps the
// running configuration, and every problem is logged.
func reloadConfig(ctx context.Context, engine *pipelines.Engine, cur *pipelines.Config, path, why string, logger *slog.Logger) *pipelines.Config {
	next, err := loadConfig(path)
	if err != nil {
		engine.ReloadRefused(pipelines.HashFile(path), err) // for /status and /metrics
		var es pipelines.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				logger.Error("reload refused: invalid configuration", "trigger", why, "problem", e.Error())
			}
		} else {
			logger.Error("reload refused", "trigger", why, "error", err)
		}
		return cur
	}
	if err := engine.Apply(ctx, next); err != nil {
		logger.Error("reload: some pipelines did not start", "trigger", why, "error", err)
	}
	return next
}

func shutdown(engine *pipelines.Engine, tp *tracing.Provider, cfg *pipelines.Config, logger *slog.Logger) int {
	logger.Info("stopping: finishing messages in flight", "shutdown_timeout", cfg.ShutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	err := engine.Close(ctx)
	stopTracing(ctx, tp, logger) // the spans of the last messages, in what is left of the timeout
	if err != nil {
		logger.Error("stopped with errors", "error", err)
		return exitFailure
	}
	logger.Info("stopped")
	return exitOK
}

func newLogger(w io.Writer, c pipelines.LogConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
