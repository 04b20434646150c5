-- Failed-login counters shared by every replica. throttle_key is
-- "account:<normalised email>" or "address:<client IP>". Times are Unix
-- microseconds.
CREATE TABLE login_failures (
    throttle_key      TEXT PRIMARY KEY,
    failures          BIGINT NOT NULL,
    last_failure_time BIGINT NOT NULL,
    blocked_until     BIGINT NOT NULL
);
