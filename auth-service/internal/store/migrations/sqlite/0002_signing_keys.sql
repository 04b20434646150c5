-- Token-signing keys shared by every replica. Times are Unix microseconds.
--
-- state moves next -> current -> retired, and the row is deleted at
-- delete_time. private_key is the PKCS #8 DER of the RSA key sealed with
-- AES-256-GCM under the key-encryption key, the kid as additional data, and
-- stored as nonce || ciphertext. It is erased when the key retires, because
-- a retired key only verifies.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('next', 'current', 'retired')),
    bits          INTEGER NOT NULL,
    public_key    BLOB NOT NULL,
    private_key   BLOB,
    create_time   BIGINT NOT NULL,
    activate_time BIGINT NOT NULL,
    retire_time   BIGINT,
    delete_time   BIGINT,
    CHECK ((state = 'retired') = (private_key IS NULL)),
    CHECK ((state = 'retired') = (retire_time IS NOT NULL AND delete_time IS NOT NULL))
);

-- At most one key signs and at most one waits to sign.
CREATE UNIQUE INDEX signing_keys_one_current_idx ON signing_keys (state) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_next_idx ON signing_keys (state) WHERE state = 'next';
