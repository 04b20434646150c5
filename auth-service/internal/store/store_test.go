package store_test

import (
	"testing"

	"example.com/todoapp/auth-service/internal/store/storetest"
)

func TestSQLiteStore(t *testing.T) {
	storetest.RunTests(t, storetest.NewSQLite)
}

func TestPostgresStore(t *testing.T) {
	storetest.PostgresURL(t)
	storetest.RunTests(t, storetest.NewPostgres)
}
