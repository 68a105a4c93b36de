package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"

	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/migrations"
	"github.com/opsgate/opsgate/projections"
)

// projectionsCommand runs `opsgate projections rebuild|verify`.
func projectionsCommand(ctx context.Context, cfg config.Config, args []string, logger *slog.Logger, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: opsgate projections rebuild|verify [--cpuprofile file]")
		return 2
	}
	if len(args) < 1 || (args[0] != "rebuild" && args[0] != "verify") {
		return usage()
	}
	fs := flag.NewFlagSet("projections "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the replay to `file`")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return usage()
	}
	if os.Getenv("GOGC") == "" {
		// A replay holds every read-model row in memory until it writes
		// them: collecting at each doubling of a heap that only grows is
		// wasted work.
		debug.SetGCPercent(400)
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			logger.Error("cpu profile", "err", err)
			return 1
		}
		defer stop()
	}
	pool, err := app.OpenPool(ctx, cfg)
	if err != nil {
		logger.Error("connect", "err", err)
		return 1
	}
	defer pool.Close()
	if err := migrations.Apply(ctx, pool, nil); err != nil {
		logger.Error("migrate", "err", err)
		return 1
	}
	store := app.NewStore(pool)
	r := &projections.Replayer{Pool: pool, Store: store, Progress: stderr}
	switch args[0] {
	case "rebuild":
		stats, err := r.Rebuild(ctx)
		if err != nil {
			logger.Error("rebuild", "err", err)
			return 1
		}
		fmt.Fprintf(stdout, "rebuilt read models from %d events in %s (%.0f events/s)\n", stats.Events, stats.Elapsed.Round(1e6), stats.PerSecond)
		return 0
	default:
		diffs, stats, err := r.Verify(ctx)
		if err != nil {
			logger.Error("verify", "err", err)
			return 1
		}
		fmt.Fprintf(stdout, "replayed %d events in %s (%.0f events/s)\n", stats.Events, stats.Elapsed.Round(1e6), stats.PerSecond)
		if len(diffs) == 0 {
			fmt.Fprintln(stdout, "read models match the event history")
			return 0
		}
		for _, d := range diffs {
			fmt.Fprintf(stdout, "DIFFERENCE in %s: %d rows only live, %d rows only rebuilt\n", d.Table, d.OnlyLive, d.OnlyRebuilt)
		}
		return 1
	}
}

// startCPUProfile profiles the process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
