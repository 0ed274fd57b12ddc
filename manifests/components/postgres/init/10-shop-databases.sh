#!/bin/sh
# Runs once, on the first start with an empty data directory (the image's /docker-entrypoint-initdb.d):
# a role and a database per stateful service. Each service applies its own schema migrations at start.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v orders_password="$ORDERS_DB_PASSWORD" -v payments_password="$PAYMENTS_DB_PASSWORD" \
  -v fulfillment_password="$FULFILLMENT_DB_PASSWORD" <<'SQL'
CREATE ROLE orders LOGIN PASSWORD :'orders_password';
CREATE DATABASE orders OWNER orders;
REVOKE ALL ON DATABASE orders FROM PUBLIC;
CREATE ROLE payments LOGIN PASSWORD :'payments_password';
CREATE DATABASE payments OWNER payments;
REVOKE ALL ON DATABASE payments FROM PUBLIC;
CREATE ROLE fulfillment LOGIN PASSWORD :'fulfillment_password';
CREATE DATABASE fulfillment OWNER fulfillment;
REVOKE ALL ON DATABASE fulfillment FROM PUBLIC;
SQL
