// Package app wires the auth service together and runs its subcommands:
// serve (the default), migrate, keys list and keys rotate.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"example.com/todoapp/auth-service/internal/config"
	"example.com/todoapp/auth-service/internal/keys"
	"example.com/todoapp/auth-service/internal/store"
)

const usage = `Usage:
  auth-service [serve] [flags]            run the service (migrates first)
  auth-service migrate [flags]            apply database migrations and exit
  auth-service keys list [flags]          list the signing keys
  auth-service keys rotate [-drop-current] [flags]
                                          start a key rotation now; with
                                          -drop-current, delete the current key
Every flag can also be set by its AUTH_* environment variable
(-grpc-addr is AUTH_GRPC_ADDR). Flags:
`

// Run runs the command in args (without the program name) and returns when
// it ends, or for serve when ctx is cancelled and shutdown has finished.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	return RunWithOutput(ctx, args, getenv, os.Stdout, stderr)
}

// RunWithOutput is Run with the output of keys list going to stdout.
func RunWithOutput(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	command, rest := splitCommand(args)

	var cfg config.Config
	fs := cfg.FlagSet("auth-service "+command, stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var dropCurrent bool
	if command == "keys rotate" {
		fs.BoolVar(&dropCurrent, "drop-current", false, "delete the current and next keys at once, for a suspected leak")
	}

	extra, err := config.Parse(&cfg, fs, rest, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		return fmt.Errorf("unexpected arguments %q: see -h", extra)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	switch command {
	case "serve":
		if err := cfg.ValidateKEKSource(); err != nil {
			return err
		}
		return serve(ctx, cfg, newLogger(cfg, stderr))
	case "migrate":
		return migrate(ctx, cfg, newLogger(cfg, stderr))
	case "keys list", "keys rotate":
		if err := cfg.ValidateKEKSource(); err != nil {
			return err
		}
		return runKeys(ctx, cfg, newLogger(cfg, stderr), command, dropCurrent, stdout)
	}
	return fmt.Errorf("unknown command %q: see -h", command)
}

// splitCommand separates the leading subcommand words from the flags. No
// words means serve.
func splitCommand(args []string) (string, []string) {
	var words []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		words = append(words, args[0])
		args = args[1:]
	}
	if len(words) == 0 {
		return "serve", args
	}
	return strings.Join(words, " "), args
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func serve(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	logger.LogAttrs(ctx, slog.LevelInfo, "auth-service configuration", cfg.LogAttrs()...)

	srv, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}

	select {
	case <-ctx.Done():
		logger.Info("shutdown requested")
	case err := <-srv.Failed():
		logger.Error("listener failed, shutting down", "err", err)
	}
	return srv.Shutdown()
}

func openStore(ctx context.Context, cfg config.Config) (*store.Store, error) {
	return store.Open(ctx, store.Config{DatabaseURL: cfg.DatabaseURL, SQLitePath: cfg.SQLitePath()})
}

func migrate(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	applied, err := st.Migrate(ctx)
	if err != nil {
		return err
	}
	logger.Info("migrations applied", "store", string(st.Dialect()), "applied", applied)
	return nil
}

func runKeys(ctx context.Context, cfg config.Config, logger *slog.Logger, command string, dropCurrent bool, stdout io.Writer) error {
	kek, err := cfg.LoadKEK(logger)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	manager, err := keys.NewManager(st.DB(), kek, cfg.Keys, logger, nil)
	if err != nil {
		return err
	}
	defer manager.Close()

	if command == "keys rotate" {
		if err := manager.Rotate(ctx, dropCurrent); err != nil {
			return fmt.Errorf("rotate signing keys: %w", err)
		}
		logger.Info("signing keys rotated", "drop_current", dropCurrent)
	}

	infos, err := manager.List(ctx)
	if err != nil {
		return fmt.Errorf("list signing keys: %w", err)
	}
	return printKeys(stdout, infos)
}

func printKeys(w io.Writer, infos []keys.KeyInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATE\tBITS\tCREATED\tACTIVATES\tRETIRED\tDELETES")
	for _, k := range infos {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", k.ID, k.State, k.Bits,
			formatTime(k.CreateTime), formatTime(k.ActivateTime), formatTime(k.RetireTime), formatTime(k.DeleteTime))
	}
	return tw.Flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
