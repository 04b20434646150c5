package app_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"example.com/todoapp/auth-service/internal/config"
	"example.com/todoapp/auth-service/internal/store/storetest"
)

func TestDevKEKNotRegeneratedOverKeys(t *testing.T) {
	dir := t.TempDir()
	first, err := startServerWithEnv(t, nil, "-dev", "-data-dir", dir)
	if err != nil {
		t.Fatalf("first -dev start = %v", err)
	}
	if err := first.Shutdown(); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}

	kekPath := filepath.Join(dir, "kek")
	if err := os.Remove(kekPath); err != nil {
		t.Fatalf("remove the dev KEK: %v", err)
	}
	_, err = startServerWithEnv(t, nil, "-dev", "-data-dir", dir)
	if !errors.Is(err, config.ErrDevKEKMissing) {
		t.Fatalf("-dev start without its KEK file = %v, want ErrDevKEKMissing", err)
	}
	if !strings.Contains(err.Error(), "restore the file") {
		t.Errorf("-dev start error = %q, want it to say what to do", err)
	}
	if _, statErr := os.Stat(kekPath); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("-dev start created %s (stat: %v), want no new KEK", kekPath, statErr)
	}
}

func TestKeysListDevCreatesNoKEK(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"AUTH_DATA_DIR": dir}
	mustRunCommand(t, env, "migrate")

	_, _, err := runCommand(t, env, "keys", "list", "-dev")
	if !errors.Is(err, config.ErrDevKEKMissing) {
		t.Errorf("keys list -dev = %v, want ErrDevKEKMissing", err)
	}
	kekPath := filepath.Join(dir, "kek")
	if _, statErr := os.Stat(kekPath); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("keys list -dev created %s (stat: %v), want no file", kekPath, statErr)
	}
}

func TestKeysCommandsNeedMigrate(t *testing.T) {
	for _, command := range []string{"list", "rotate"} {
		t.Run("sqlite "+command, func(t *testing.T) {
			dir := t.TempDir()
			env := map[string]string{config.KEKEnv: testKEK, "AUTH_DATA_DIR": dir}

			_, _, err := runCommand(t, env, "keys", command)
			if err == nil || !strings.Contains(err.Error(), "run `auth-service migrate` first") {
				t.Errorf("keys %s before migrate = %v, want a run migrate first error", command, err)
			}
			entries, readErr := os.ReadDir(dir)
			if readErr != nil {
				t.Fatal(readErr)
			}
			if len(entries) != 0 {
				t.Errorf("keys %s before migrate created %d files in the data directory, want none", command, len(entries))
			}
		})

		t.Run("postgres "+command, func(t *testing.T) {
			env := map[string]string{
				config.KEKEnv:       testKEK,
				"AUTH_DATA_DIR":     t.TempDir(),
				"AUTH_DATABASE_URL": storetest.NewPostgresDatabase(t),
			}

			_, _, err := runCommand(t, env, "keys", command)
			if err == nil || !strings.Contains(err.Error(), "run `auth-service migrate` first") {
				t.Errorf("keys %s before migrate = %v, want a run migrate first error", command, err)
			}
		})
	}
}

func TestKeysWithoutSubcommand(t *testing.T) {
	for _, args := range [][]string{{"keys"}, {"keys", "-dev"}, {"keys", "frobnicate"}} {
		_, _, err := runCommand(t, map[string]string{config.KEKEnv: testKEK, "AUTH_DATA_DIR": t.TempDir()}, args...)
		if err == nil {
			t.Errorf("Run(%q) = nil error, want a keys subcommand error", args)
			continue
		}
		for _, subcommand := range []string{"list", "rotate", "rewrap"} {
			if !strings.Contains(err.Error(), subcommand) {
				t.Errorf("Run(%q) = %q, want it to name the %s subcommand", args, err, subcommand)
			}
		}
	}
}
