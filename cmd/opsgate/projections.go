package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/migrations"
	"github.com/opsgate/opsgate/projections"
)

// projectionsCommand runs `opsgate projections rebuild|verify`.
func projectionsCommand(ctx context.Context, cfg config.Config, args []string, logger *slog.Logger, stdout, stderr io.Writer) int {
	if len(args) != 1 || (args[0] != "rebuild" && args[0] != "verify") {
		fmt.Fprintln(stderr, "usage: opsgate projections rebuild|verify")
		return 2
	}
	pool, err := openPool(ctx, cfg)
	if err != nil {
		logger.Error("connect", "err", err)
		return 1
	}
	defer pool.Close()
	if err := migrations.Apply(ctx, pool, nil); err != nil {
		logger.Error("migrate", "err", err)
		return 1
	}
	store := eventstore.New(pool, gate.NewRegistry(), eventstore.WithRoute(gate.Route))
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
