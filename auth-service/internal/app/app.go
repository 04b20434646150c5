// Package app wires the auth service together and runs its subcommands:
// serve (the default), migrate, keys list, keys rotate and keys rewrap.
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

	"github.com/prometheus/client_golang/prometheus"

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
  auth-service keys rewrap [flags]        re-seal every stored private key under
                                          the KEK of -kek-file or AUTH_KEK,
                                          opening them with it or with the
                                          previous KEK
Every flag can also be set by its AUTH_* environment variable
(-grpc-addr is AUTH_GRPC_ADDR). Flags:
`

// Run runs the command in args (without the program name) and returns when
// it ends, or for serve when ctx is cancelled and shutdown has finished.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	return RunWithOutput(ctx, args, getenv, os.Stdout, stderr)
}

// RunWithOutput is Run with the key table of the keys commands going to
// stdout.
func RunWithOutput(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	command, rest := splitCommand(args)
	if err := checkKeysCommand(command); err != nil {
		return err
	}

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
	case "keys list", "keys rotate", "keys rewrap":
		if err := cfg.ValidateKEKSource(); err != nil {
			return err
		}
		return runKeys(ctx, cfg, newLogger(cfg, stderr), command, dropCurrent, stdout)
	}
	return fmt.Errorf("unknown command %q: see -h", command)
}

// checkKeysCommand returns an error listing the keys subcommands when
// command is keys without a known one.
func checkKeysCommand(command string) error {
	switch {
	case command == "keys":
		return errors.New("missing keys subcommand: use keys list, keys rotate or keys rewrap (see -h)")
	case strings.HasPrefix(command, "keys ") && command != "keys list" && command != "keys rotate" && command != "keys rewrap":
		return fmt.Errorf("unknown command %q: the keys subcommands are list, rotate and rewrap (see -h)", command)
	}
	return nil
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
		logger.Info("shutdown requested", "cause", context.Cause(ctx).Error())
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
	st, err := openMigratedStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()

	kek, err := loadKEK(ctx, cfg, logger, st, false)
	if err != nil {
		return err
	}
	previousKEK, err := cfg.LoadPreviousKEK()
	if err != nil {
		return err
	}

	manager, err := newKeyManager(st, kek, previousKEK, cfg, logger, nil)
	if err != nil {
		return err
	}
	defer manager.Close()

	// The ids let an operator match the KEK column of the output to the
	// configured KEKs.
	previousID := ""
	if previousKEK != nil {
		previousID = keys.KEKID(previousKEK)
	}
	logger.Info("key-encryption keys", "kek_id", keys.KEKID(kek), "previous_kek_id", previousID)

	switch command {
	case "keys rotate":
		if err := manager.Rotate(ctx, dropCurrent); err != nil {
			return fmt.Errorf("rotate signing keys: %w", explainDecrypt(err))
		}
		logger.Info("signing keys rotated", "drop_current", dropCurrent)
	case "keys rewrap":
		rewrapped, err := manager.Rewrap(ctx)
		if err != nil {
			return fmt.Errorf("re-seal signing keys, nothing changed: %w", explainDecrypt(err))
		}
		logger.Info("signing keys re-sealed", "rewrapped_kids", rewrapped, "kek_id", keys.KEKID(kek))
	}

	infos, err := manager.List(ctx)
	if err != nil {
		return fmt.Errorf("list signing keys: %w", err)
	}
	return printKeys(stdout, infos)
}

// openMigratedStore opens the store for the keys commands, which need the
// schema that `auth-service migrate` creates. Unlike openStore, it creates
// no SQLite file.
func openMigratedStore(ctx context.Context, cfg config.Config) (*store.Store, error) {
	if cfg.DatabaseURL == "" {
		if _, err := os.Stat(cfg.SQLitePath()); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no SQLite database at %s: run `auth-service migrate` first", cfg.SQLitePath())
		}
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pending, err := st.PendingMigrations(ctx)
	if err != nil {
		st.Close()
		return nil, err
	}
	if len(pending) > 0 {
		st.Close()
		return nil, fmt.Errorf("the database lacks migrations %s: run `auth-service migrate` first", strings.Join(pending, ", "))
	}
	return st, nil
}

// loadKEK returns the KEK of cfg. In -dev mode, generate allows creating a
// missing <data-dir>/kek, which happens only while st contains no signing
// keys, because a new KEK cannot open keys sealed with a lost one.
func loadKEK(ctx context.Context, cfg config.Config, logger *slog.Logger, st *store.Store, generate bool) ([]byte, error) {
	sealed := 0
	if cfg.Dev {
		var err error
		if sealed, err = keys.CountKeys(ctx, st.DB()); err != nil {
			return nil, err
		}
	}

	kek, err := cfg.LoadKEK(logger, generate && sealed == 0)
	switch {
	case !errors.Is(err, config.ErrDevKEKMissing):
		return kek, err
	case sealed > 0:
		return nil, fmt.Errorf("%w, but the database contains %d signing keys sealed with the KEK from that file, which a new KEK "+
			"cannot open: restore the file, or set %s or -kek-file to that KEK", err, sealed, config.KEKEnv)
	default:
		return nil, fmt.Errorf("%w: the keys commands do not create it, so start `auth-service -dev` once "+
			"to generate it, or set %s or -kek-file", err, config.KEKEnv)
	}
}

// newKeyManager returns the signing-key manager over st with the primary
// KEK and, when previousKEK is not nil, the previous one.
func newKeyManager(st *store.Store, kek, previousKEK []byte, cfg config.Config, logger *slog.Logger, reg prometheus.Registerer) (*keys.Manager, error) {
	var opts []keys.Option
	if previousKEK != nil {
		opts = append(opts, keys.WithPreviousKEKs(previousKEK))
	}
	return keys.NewManager(st.DB(), kek, cfg.Keys, logger, reg, opts...)
}

// explainDecrypt adds what to do to an error that wraps keys.ErrDecrypt.
func explainDecrypt(err error) error {
	if !errors.Is(err, keys.ErrDecrypt) {
		return err
	}
	return fmt.Errorf("%w: configure the KEK that sealed the stored keys, as -kek-file or %s, or after a KEK change as "+
		"-previous-kek-file or %s until `auth-service keys rewrap` has re-sealed them", err, config.KEKEnv, config.PreviousKEKEnv)
}

func printKeys(w io.Writer, infos []keys.KeyInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATE\tBITS\tCREATED\tACTIVATES\tRETIRED\tDELETES\tKEK")
	for _, k := range infos {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.State, k.Bits,
			formatTime(k.CreateTime), formatTime(k.ActivateTime), formatTime(k.RetireTime), formatTime(k.DeleteTime),
			formatKEK(k))
	}
	return tw.Flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// formatKEK returns the KEK column of keys list: the id of the configured
// KEK that opens the private key, "-" for a retired key, which has none,
// and "none" when no configured KEK opens it.
func formatKEK(k keys.KeyInfo) string {
	switch {
	case k.KEKID != "":
		return k.KEKID
	case k.State == keys.StateRetired:
		return "-"
	default:
		return "none"
	}
}
