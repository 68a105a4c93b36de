// Command opsgate is the dispatch gate for provider-backed operations.
//
//	opsgate serve [--roles api,projector,worker]   run the service
//	opsgate migrate                                apply database migrations
//	opsgate projections rebuild|verify             replay the history into read models
//	opsgate audit verify --tenant ID | --file F    recompute an audit chain
//	opsgate openapi                                print the published OpenAPI document
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/config"
	"github.com/opsgate/opsgate/migrations"
)

const usage = `usage: opsgate <command> [flags]

commands:
  serve [--roles api,projector,worker]  serve the roles given (default: all three)
  migrate                               apply database migrations and exit
  projections rebuild [--cpuprofile f]  rebuild every read model from the event history and swap it in
  projections verify [--cpuprofile f]   rebuild into scratch tables and report differences (exit 1)
  audit verify --tenant ID | --file F   recompute a tenant's audit chain, from the database or an export (exit 1 on the first mismatch)
  openapi                               print the OpenAPI document served at /api/v1/openapi.json (the input of generated clients)

configuration comes from the environment; see README.md.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "openapi" {
		doc, err := api.PublishedDocument(api.OpenAPIDocument)
		if err != nil {
			fmt.Fprintf(stderr, "opsgate openapi: %v\n", err)
			return 1
		}
		_, _ = stdout.Write(doc)
		return 0
	}
	if args[0] == "audit" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return auditCommand(ctx, args[1:], stdout, stderr)
	}
	cfg, err := config.FromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "opsgate: configuration:\n%v\n", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch args[0] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(stderr)
		rolesFlag := fs.String("roles", "api,projector,worker", "comma-separated roles to run: api, projector, worker")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		roles, err := app.ParseRoles(*rolesFlag)
		if err != nil {
			fmt.Fprintf(stderr, "opsgate serve: %v\n", err)
			return 2
		}
		if err := serve(ctx, cfg, roles, logger, stdout); err != nil {
			logger.Error("serve failed", "err", err)
			return 1
		}
		return 0
	case "migrate":
		pool, err := app.OpenPool(ctx, cfg)
		if err != nil {
			logger.Error("connect", "err", err)
			return 1
		}
		defer pool.Close()
		if err := migrations.Apply(ctx, pool, logger); err != nil {
			logger.Error("migrate", "err", err)
			return 1
		}
		fmt.Fprintln(stdout, "migrations applied")
		return 0
	case "projections":
		return projectionsCommand(ctx, cfg, args[1:], logger, stdout, stderr)
	}
	fmt.Fprintf(stderr, "opsgate: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// serve runs roles until ctx is cancelled (SIGTERM), then drains.
func serve(ctx context.Context, cfg config.Config, roles app.Roles, logger *slog.Logger, stdout io.Writer) error {
	a, err := app.New(ctx, cfg, roles, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	var ln net.Listener
	if roles.API {
		if a.AdminTokenGenerated {
			fmt.Fprintf(stdout, "OPSGATE_ADMIN_TOKEN was not set; the admin token of this process is:\n  %s\n", a.AdminToken)
		}
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
		}
	}
	return a.Run(ctx, ln)
}
