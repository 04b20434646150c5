-- The last key set fetched from the auth service's JWKS endpoint, kept so a
-- restart while the auth service is down can still verify tokens. The table
-- has at most one row.
CREATE TABLE jwks_cache (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    body       BYTEA NOT NULL,
    fetched_at BIGINT NOT NULL
);
