package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// LoadKeySet returns the persisted JWKS body and the time it was fetched.
// It returns a nil body, the zero time and a nil error when none is stored.
// Together with SaveKeySet it implements the persister of the JWKS cache.
func (s *Store) LoadKeySet(ctx context.Context) ([]byte, time.Time, error) {
	var row struct {
		Body      []byte `db:"body"`
		FetchedAt int64  `db:"fetched_at"`
	}
	err := s.db.GetContext(ctx, &row, `SELECT body, fetched_at FROM jwks_cache WHERE id = 1`)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("select persisted key set: %w", err)
	}
	return row.Body, fromMicros(row.FetchedAt), nil
}

// SaveKeySet stores body as the persisted JWKS unless the stored one was
// fetched later, which happens when another replica saved a newer set
// first.
func (s *Store) SaveKeySet(ctx context.Context, body []byte, fetchedAt time.Time) error {
	query := s.rebind(`INSERT INTO jwks_cache (id, body, fetched_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET body = excluded.body, fetched_at = excluded.fetched_at
		WHERE jwks_cache.fetched_at <= excluded.fetched_at`)
	if _, err := s.db.ExecContext(ctx, query, body, fetchedAt.UnixMicro()); err != nil {
		return fmt.Errorf("save key set: %w", err)
	}
	return nil
}
