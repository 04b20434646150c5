-- Accounts, login sessions and the refresh tokens each session issued.
-- Times are Unix microseconds.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    create_time   BIGINT NOT NULL,
    update_time   BIGINT NOT NULL
);

-- A session is one login and the family of refresh tokens it produced.
CREATE TABLE sessions (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    create_time       BIGINT NOT NULL,
    last_refresh_time BIGINT NOT NULL,
    expire_time       BIGINT NOT NULL,
    revoke_time       BIGINT,
    revoke_reason     TEXT NOT NULL DEFAULT ''
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Refresh tokens are stored only as the hex SHA-256 of the token. use_time
-- is set when the token is exchanged; a second exchange is a reuse.
CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    create_time BIGINT NOT NULL,
    expire_time BIGINT NOT NULL,
    use_time    BIGINT
);

CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
