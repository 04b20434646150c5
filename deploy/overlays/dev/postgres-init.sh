#!/bin/sh
# Creates one role and one database per service, so that each service owns
# its own database. The postgres image runs this once, on an empty data
# directory, with the passwords from the postgres-secrets Secret.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
  -v auth_password="$AUTH_DB_PASSWORD" \
  -v todo_password="$TODO_DB_PASSWORD" <<'SQL'
CREATE ROLE auth LOGIN PASSWORD :'auth_password';
CREATE DATABASE auth OWNER auth;
CREATE ROLE todo LOGIN PASSWORD :'todo_password';
CREATE DATABASE todo OWNER todo;
SQL
