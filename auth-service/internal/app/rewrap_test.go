package app_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"example.com/todoapp/auth-service/internal/app"
	"example.com/todoapp/auth-service/internal/config"
	"example.com/todoapp/auth-service/internal/keys"
	"example.com/todoapp/auth-service/internal/store/storetest"
	authv1 "example.com/todoapp/proto/gen/auth/v1"
)

// kekFixture is one key-encryption key in the forms a leak could take.
type kekFixture struct {
	raw    []byte
	base64 string
	id     string
}

func newKEKFixture(seed byte) kekFixture {
	raw := bytes.Repeat([]byte{seed}, 32)
	return kekFixture{raw: raw, base64: base64.StdEncoding.EncodeToString(raw), id: keys.KEKID(raw)}
}

// keyDatabase is one auth database shared by commands and servers in a
// test: a SQLite data directory, or a PostgreSQL URL as well.
type keyDatabase struct {
	dataDir     string
	databaseURL string
}

// env returns the environment for a command or server on the database with
// the KEK and, when previous is not nil, the previous KEK.
func (d keyDatabase) env(kek kekFixture, previous *kekFixture) map[string]string {
	env := map[string]string{config.KEKEnv: kek.base64, "AUTH_DATA_DIR": d.dataDir}
	if d.databaseURL != "" {
		env["AUTH_DATABASE_URL"] = d.databaseURL
	}
	if previous != nil {
		env[config.PreviousKEKEnv] = previous.base64
	}
	return env
}

// serverArgs returns the flags that point startServerWithEnv at the
// database, which the environment cannot do because startServer sets
// -data-dir.
func (d keyDatabase) serverArgs() []string {
	args := []string{"-data-dir", d.dataDir}
	if d.databaseURL != "" {
		args = append(args, "-database-url", d.databaseURL)
	}
	return args
}

// eachKeyDatabase runs fn on a fresh SQLite database and a fresh PostgreSQL
// database. The PostgreSQL subtest skips visibly without TEST_DATABASE_URL.
func eachKeyDatabase(t *testing.T, fn func(t *testing.T, db keyDatabase)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, keyDatabase{dataDir: t.TempDir()})
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, keyDatabase{dataDir: t.TempDir(), databaseURL: storetest.NewPostgresDatabase(t)})
	})
}

// runCommand runs the auth-service command in args and returns its stdout,
// stderr and error.
func runCommand(t *testing.T, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr strings.Builder
	err := app.RunWithOutput(testContext(t), args, func(k string) string { return env[k] }, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// mustRunCommand is runCommand that fails the test on error.
func mustRunCommand(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	stdout, stderr, err := runCommand(t, env, args...)
	if err != nil {
		t.Fatalf("Run(%q) = %v; stderr:\n%s", args, err, stderr)
	}
	return stdout
}

// checkNoKeyMaterial fails the test when text contains any form of the
// KEKs, or a private key in PEM or JWK form.
func checkNoKeyMaterial(t *testing.T, what, text string, keks ...kekFixture) {
	t.Helper()
	for _, kek := range keks {
		for _, form := range []string{kek.base64, hex.EncodeToString(kek.raw), string(kek.raw)} {
			if strings.Contains(text, form) {
				t.Errorf("%s contains the KEK %s:\n%s", what, kek.id, text)
			}
		}
	}
	for _, marker := range []string{"PRIVATE KEY", `"d":`} {
		if strings.Contains(text, marker) {
			t.Errorf("%s contains %q:\n%s", what, marker, text)
		}
	}
}

// kekColumn returns the KEK column of each non-retired key in the output of
// a keys command.
func kekColumn(t *testing.T, table string) []string {
	t.Helper()
	var column []string
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		fields := strings.Fields(line)
		if len(fields) != 8 {
			t.Fatalf("key table line %q has %d columns, want 8", line, len(fields))
		}
		if fields[1] != string(keys.StateRetired) {
			column = append(column, fields[7])
		}
	}
	if len(column) == 0 {
		t.Fatalf("key table has no current or next key:\n%s", table)
	}
	return column
}

func checkKEKColumn(t *testing.T, what, table, want string) {
	t.Helper()
	for _, got := range kekColumn(t, table) {
		if got != want {
			t.Errorf("%s KEK column = %q, want %q:\n%s", what, got, want, table)
		}
	}
}

func TestRunKeysRewrap(t *testing.T) {
	eachKeyDatabase(t, func(t *testing.T, db keyDatabase) {
		oldKEK, newKEK := newKEKFixture(1), newKEKFixture(2)
		wrongKEK, wrongPrevious := newKEKFixture(3), newKEKFixture(4)
		all := []kekFixture{oldKEK, newKEK, wrongKEK, wrongPrevious}

		mustRunCommand(t, db.env(oldKEK, nil), "migrate")
		out := mustRunCommand(t, db.env(oldKEK, nil), "keys", "rotate")
		checkKEKColumn(t, "keys rotate under the old KEK", out, oldKEK.id)

		stdout, stderr, err := runCommand(t, db.env(wrongKEK, &wrongPrevious), "keys", "rewrap")
		if err == nil || !strings.Contains(err.Error(), "nothing changed") {
			t.Errorf("keys rewrap with the wrong KEKs = %v, want an error saying nothing changed", err)
		}
		checkNoKeyMaterial(t, "failed keys rewrap output", stdout+stderr+errorText(err), all...)
		out = mustRunCommand(t, db.env(oldKEK, nil), "keys", "list")
		checkKEKColumn(t, "keys list after the failed rewrap", out, oldKEK.id)

		stdout, stderr, err = runCommand(t, db.env(newKEK, &oldKEK), "keys", "rewrap")
		if err != nil {
			t.Fatalf("keys rewrap = %v; stderr:\n%s", err, stderr)
		}
		checkKEKColumn(t, "keys rewrap", stdout, newKEK.id)
		checkNoKeyMaterial(t, "keys rewrap output", stdout+stderr, all...)
		if !strings.Contains(stderr, "signing keys re-sealed") {
			t.Errorf("keys rewrap log = %q, want a line saying the keys were re-sealed", stderr)
		}

		out = mustRunCommand(t, db.env(oldKEK, nil), "keys", "list")
		checkKEKColumn(t, "keys list under the old KEK after the rewrap", out, "none")

		// The service starts with only the new KEK and verifies the tokens
		// it signs, and no longer starts with only the old one.
		s, err := startServerWithEnv(t, db.env(newKEK, nil), db.serverArgs()...)
		if err != nil {
			t.Fatalf("app.Start() with only the new KEK = %v", err)
		}
		signed := signUp(t, s, "ada@example.com", "correct horse battery")
		if _, err := s.client.GetCurrentUser(withToken(testContext(t), signed.GetTokens().GetAccessToken()), &authv1.GetCurrentUserRequest{}); err != nil {
			t.Errorf("GetCurrentUser() after the rewrap = %v", err)
		}
		checkNoKeyMaterial(t, "server log", s.logs.String(), all...)

		_, err = startServerWithEnv(t, db.env(oldKEK, nil), db.serverArgs()...)
		if err == nil || !strings.Contains(err.Error(), "-previous-kek-file") {
			t.Errorf("app.Start() with only the old KEK = %v, want a decrypt error naming -previous-kek-file", err)
		}
		checkNoKeyMaterial(t, "start-up error", errorText(err), all...)
	})
}

func TestServeWithPreviousKEKAcrossRewrap(t *testing.T) {
	eachKeyDatabase(t, func(t *testing.T, db keyDatabase) {
		oldKEK, newKEK := newKEKFixture(1), newKEKFixture(2)

		mustRunCommand(t, db.env(oldKEK, nil), "migrate")
		mustRunCommand(t, db.env(oldKEK, nil), "keys", "list")

		before, err := startServerWithEnv(t, db.env(newKEK, &oldKEK), db.serverArgs()...)
		if err != nil {
			t.Fatalf("app.Start() with new and previous KEK before the rewrap = %v", err)
		}
		signed := signUp(t, before, "ada@example.com", "correct horse battery")

		out := mustRunCommand(t, db.env(newKEK, &oldKEK), "keys", "rewrap")
		checkKEKColumn(t, "keys rewrap", out, newKEK.id)

		after, err := startServerWithEnv(t, db.env(newKEK, &oldKEK), db.serverArgs()...)
		if err != nil {
			t.Fatalf("app.Start() with new and previous KEK after the rewrap = %v", err)
		}
		for name, s := range map[string]*testServer{"started before the rewrap": before, "started after the rewrap": after} {
			logged := login(t, s, "ada@example.com", "correct horse battery")
			for _, token := range []string{signed.GetTokens().GetAccessToken(), logged.GetTokens().GetAccessToken()} {
				if _, err := s.client.GetCurrentUser(withToken(testContext(t), token), &authv1.GetCurrentUserRequest{}); err != nil {
					t.Errorf("server %s: GetCurrentUser() = %v", name, err)
				}
			}
			checkNoKeyMaterial(t, "log of the server "+name, s.logs.String(), oldKEK, newKEK)
			if !strings.Contains(s.logs.String(), newKEK.id) || !strings.Contains(s.logs.String(), oldKEK.id) {
				t.Errorf("log of the server %s does not name the KEK ids %s and %s", name, newKEK.id, oldKEK.id)
			}
		}
	})
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
