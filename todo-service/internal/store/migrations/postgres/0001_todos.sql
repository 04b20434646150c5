-- Todos of every user. Times are unix microseconds, so both stores behave
-- the same in Go.
CREATE TABLE todos (
    id            UUID PRIMARY KEY,
    user_id       TEXT NOT NULL,
    title         TEXT NOT NULL,
    description   TEXT NOT NULL,
    completed     BOOLEAN NOT NULL,
    create_time   BIGINT NOT NULL,
    update_time   BIGINT NOT NULL,
    complete_time BIGINT,
    etag          TEXT NOT NULL
);

-- ListTodos reads newest first from a keyset position, with and without the
-- completed filter.
CREATE INDEX todos_user_create_idx
    ON todos (user_id, create_time DESC, id DESC);
CREATE INDEX todos_user_completed_create_idx
    ON todos (user_id, completed, create_time DESC, id DESC);
