-- The last key set fetched from the auth service's JWKS endpoint, kept so a
-- restart while the auth service is down can still verify tokens. The table
-- has at most one row.
CREATE TABLE jwks_cache (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    body       BLOB NOT NULL,
    fetched_at INTEGER NOT NULL
);
