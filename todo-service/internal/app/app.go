// Package app wires the todo service together: the command line, the
// store, the JWKS cache, the gRPC and HTTP listeners, health and shutdown.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"example.com/todoapp/todo-service/internal/config"
	"example.com/todoapp/todo-service/internal/store"
)

const usage = config.Usage + `
Run "todo-service -h" for the flags.
`

// Run runs the command named by args[0], "serve" when args is empty or
// starts with a flag. It reads settings from the flags in args and from the
// environment through getenv, and writes logs and usage text to stderr.
// "serve" returns nil after a clean shutdown once ctx is done.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	command := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		command, args = args[0], args[1:]
	}
	switch command {
	case "serve", "migrate":
	case "help":
		fmt.Fprint(stderr, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", command)
	}

	cfg, err := config.Parse("todo-service "+command, args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	logger := NewLogger(cfg, stderr)

	if command == "migrate" {
		return migrate(ctx, cfg, logger)
	}

	server, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return server.Run(ctx)
}

// NewLogger returns the logger that cfg selects, writing to w.
func NewLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// migrate applies the pending migrations and logs what it applied.
func migrate(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	s, err := store.Open(ctx, store.Options{DatabaseURL: cfg.DatabaseURL, DataDir: cfg.DataDir})
	if err != nil {
		return err
	}
	defer s.Close()

	applied, err := s.Migrate(ctx)
	if err != nil {
		return err
	}
	logger.Info("migrations applied", "store", s.Dialect(), "database", s.Target(), "versions", applied)
	return nil
}
